//! deploybot: a chat-ops deployment bot that runs the InvoiceMe runbook from chat.
//!
//! Layout (see ARCHITECTURE.md for the invariants):
//! - [`config`]: the operator's TOML file, typed and validated once at load;
//! - [`policy`]: deployment windows (pure);
//! - [`model`]: the records the engine, the store and the renderers share;
//! - [`store`]: SQLite / PostgreSQL behind one interface, migrations, history and stats;
//! - [`secrets`]: `${ENV}` references and redaction;
//! - [`targets`]: deploy drivers behind one trait;
//! - [`verify`]: health checks and smoke tests;
//! - [`backup`]: pg_dump to S3 and the restore of `/rollback --with-db`;
//! - [`registry`]: does an image tag exist (Docker Registry HTTP API v2);
//! - [`monitor`]: post-deploy rules and alerts;
//! - [`notify`]: email, Statuspage, webhook notifications and the history commit;
//! - [`cli`]: what `main.rs` dispatches to.
//!
//! The chat command language is its own crate, `deploybot-commands`.

pub mod app;
pub mod approval;
pub mod backup;
pub mod chat;
pub mod checklist;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod policy;
pub mod registry;
pub mod release;
pub mod secrets;
pub mod store;
pub mod targets;
pub mod verify;
