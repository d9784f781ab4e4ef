//! The `ecs` driver: AWS ECS through aws-sdk-ecs.

mod config;

pub use config::EcsConfig;
