//! Post-deploy monitoring: metric rules, the Prometheus source, the Alertmanager receiver.

pub mod rules;
