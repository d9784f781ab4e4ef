//! The `docker` driver: a Docker Engine through bollard (the runbook's "Docker Compose (single server)").

mod config;

pub use config::DockerConfig;
