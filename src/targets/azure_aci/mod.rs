//! The `azure_aci` driver: Azure Container Instances through the ARM REST API.

mod config;

pub use config::AciConfig;
