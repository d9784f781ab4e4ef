//! The `docker` driver: a Docker Engine through bollard (the runbook's "Docker Compose (single server)").
//!
//! *Invariant*: bollard's types stay in this folder; the engine sees `Running` and `TargetError`.
//! *Invariant*: a deploy never leaves a service without a container: the old one is renamed, not
//! removed, until the new one is confirmed running, and is put back on any failure before that.

mod config;
mod diagnostics;
mod driver;
mod spec;
#[cfg(test)]
mod tests;

pub use config::DockerConfig;
pub use driver::{DockerTarget, PREVIOUS_SUFFIX};
/// Error-chain formatting and image-reference parsing, shared with the other drivers.
pub(crate) use driver::chain;
pub(crate) use spec::{repository_of, tag_of};
