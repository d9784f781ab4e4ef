//! The `ecs` driver: AWS ECS through aws-sdk-ecs (the runbook's `aws ecs register-task-definition`
//! and `update-service`).
//!
//! A deploy registers a new revision of the service's current task definition that differs only
//! in the image of the service's container, and points the service at it; the rollout is followed
//! on the service's deployment of that revision. A rollback points the service back at the exact
//! task-definition ARN that ran before (recorded as `Running::reference`) and never registers one.
//!
//! *Invariant*: aws-sdk types stay in this folder; the engine sees `Running` and `TargetError`.

mod config;
mod diagnostics;
mod driver;
mod rollout;
mod taskdef;

pub use config::EcsConfig;
pub use driver::EcsTarget;
