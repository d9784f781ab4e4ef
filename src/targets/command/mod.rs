//! The `command` driver: a shell-free argv template per deploy and rollback.
//!
//! *Invariant*: no shell ever sees a template: placeholders are substituted per argument and the
//! argv is executed directly, so a version string cannot inject anything.

mod config;
mod driver;
mod process;
#[cfg(test)]
mod tests;

pub use config::CommandConfig;
pub(crate) use config::{secret_references_in_argv, validate_env_table};
pub use driver::{run_argv, CommandTarget};
