//! Post-deploy monitoring: metric rules, the Prometheus source, the watch's evaluation, the
//! Alertmanager receiver's payload, and the bot's own metrics.

pub mod alertmanager;
pub mod demo_source;
pub mod http;
pub mod metrics;
pub mod prometheus;
pub mod rules;
pub mod watch;
