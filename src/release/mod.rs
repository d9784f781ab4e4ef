//! `/release`: tag a commit, build and push every service's image, record the release.
//!
//! - `config`: `[release]` and `[services.X.build]`;
//! - `git`: the bot's bare clone of the repository, the tag, the notes' commits, build worktrees;
//! - `image`: image builds and pushes through the Docker Engine;
//! - `notes`: release notes grouped by conventional-commit type;
//! - `migrations`: which migration scripts a version brings that the database has not run.
//!
//! The engine's `/release` handler (`engine/release.rs`) runs them in order and records the result.

mod config;
pub mod git;
pub mod image;
pub mod migrations;
pub mod notes;

pub use config::{BuildConfig, ReleaseConfig};
