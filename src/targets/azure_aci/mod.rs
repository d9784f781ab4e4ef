//! The `azure_aci` driver: Azure Container Instances through the ARM REST API (the runbook's
//! `az container create`), over reqwest.
//!
//! A deploy GETs the service's container group and PUTs it back with only the service's
//! container's image changed; the rollout is the group's `provisioningState` reaching `Succeeded`.
//! ARM never returns secure environment values or registry passwords, so a PUT supplies them from
//! the config (`secure_environment`, `registry_passwords`) and is refused, naming them, when they
//! are missing rather than silently dropping them.
//!
//! *Invariant*: ARM's JSON stays in this folder; the engine sees `Running` and `TargetError`.
//! *Invariant*: tokens and secret values are held in `Secret`s, so no error text can carry them.

mod auth;
mod config;
mod driver;
mod group;

pub use config::AciConfig;
pub use driver::AciTarget;
