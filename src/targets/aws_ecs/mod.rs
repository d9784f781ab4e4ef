//! The `ecs` driver: AWS ECS through aws-sdk-ecs (the runbook's `aws ecs register-task-definition`
//! and `update-service`).
//!
//! A deploy registers a new revision of the service's current task definition that differs only
//! in the image of the service's container, and points the service at it; the rollout is followed
//! on the service's deployment of that revision. A rollback points the service back at the exact
//! task-definition ARN recorded for the version it goes back to (`Running::reference`: the one a
//! deployment replaced, or for `/rollback --to` the one the version's last successful deployment
//! ran); only when none was ever recorded does it register one as a deploy of that version would.
//!
//! *Invariant*: aws-sdk types stay in this folder; the engine sees `Running` and `TargetError`.

mod config;
mod diagnostics;
mod driver;
mod logs;
mod rollout;
mod taskdef;

pub use config::EcsConfig;
pub use driver::EcsTarget;
