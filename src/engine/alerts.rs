//! Alerts in the channel: Alertmanager's webhook and the watch's breaches, tied to the latest
//! deployment, deduplicated by fingerprint; the rollback emoji on an alert asks for `/rollback`.
//!
//! One message per firing episode (fingerprint + `startsAt`), keyed in the outbox so that the
//! resolved notification edits it rather than posting again.

use std::sync::Arc;

use anyhow::Result;
use deploybot_commands::{EnvName, RollbackArgs};

use super::{render, Engine};
use crate::chat::outbox::Draft;
use crate::chat::UserRef;
use crate::config::Environment;
use crate::model::{Deployment, DeploymentState};
use crate::monitor::alertmanager::{span, Alert, Payload};
use crate::store::{AlertRecord, StoredMessage};

/// What became of one webhook call.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AlertsReceived {
    /// Alerts posted or edited in a channel.
    pub delivered: usize,
    /// Alerts that match no environment, with why.
    pub ignored: Vec<String>,
}

/// States of deployments that changed (or tried to change) what runs.
const RAN: [DeploymentState; 8] = [
    DeploymentState::Running,
    DeploymentState::Verifying,
    DeploymentState::Monitoring,
    DeploymentState::Succeeded,
    DeploymentState::Failed,
    DeploymentState::RollingBack,
    DeploymentState::RolledBack,
    DeploymentState::RollbackFailed,
];

impl Engine {
    /// The environment named by a label value: its name or one of its aliases.
    fn env_named(&self, value: &str) -> Option<&Environment> {
        self.config.environments.values().find(|e| e.name.as_str() == value || e.base.aliases.iter().any(|a| a == value))
    }

    /// The most recent deployment that ran in `env`.
    pub(crate) async fn latest_deployment(&self, env: &str) -> Result<Option<Deployment>> {
        Ok(self.store.deployments(Some(env), &RAN, 1).await?.into_iter().next())
    }

    /// `POST /alerts/alertmanager`: each alert to its environment's channel.
    #[tracing::instrument(skip_all, fields(group = %payload.group_key, alerts = payload.alerts.len()))]
    pub async fn receive_alertmanager(&self, payload: &Payload) -> Result<AlertsReceived> {
        let label = &self.config.alerts.env_label;
        let mut out = AlertsReceived::default();
        for alert in &payload.alerts {
            crate::monitor::metrics::global().alert_received();
            let Some(value) = alert.labels.get(label) else {
                tracing::warn!(alert = alert.name(), fingerprint = %alert.fingerprint, label = %label, "an Alertmanager alert has no environment label; it was not posted");
                out.ignored.push(format!("{} ({}): no `{label}` label", alert.name(), alert.fingerprint));
                continue;
            };
            let Some(env) = self.env_named(value) else {
                tracing::warn!(alert = alert.name(), fingerprint = %alert.fingerprint, env = %value, "an Alertmanager alert names an environment that is not configured; it was not posted");
                out.ignored.push(format!("{} ({}): environment \"{value}\" is not configured", alert.name(), alert.fingerprint));
                continue;
            };
            self.post_alertmanager_alert(env, alert).await?;
            out.delivered += 1;
        }
        Ok(out)
    }

    async fn post_alertmanager_alert(&self, env: &Environment, alert: &Alert) -> Result<()> {
        let now = self.now_ms();
        let latest = self.latest_deployment(env.name.as_str()).await?;
        let starts = alert.starts_at.timestamp_millis();
        let record = AlertRecord {
            fingerprint: alert.episode_key(),
            env: Some(env.name.to_string()),
            deployment_id: latest.as_ref().map(|d| d.id),
            name: alert.name().to_string(),
            status: if alert.resolved() { "resolved".into() } else { "firing".into() },
            source: "alertmanager".into(),
            labels: serde_json::to_string(&alert.labels)?,
            annotations: serde_json::to_string(&alert.annotations)?,
            starts_at: starts,
            ends_at: alert.ended().map(|t| t.timestamp_millis()),
        };
        let (id, new) = self.store.upsert_alert(&record, now).await?;
        tracing::info!(alert = alert.name(), env = %env.name, alert_id = id, new, status = %alert.status, "Alertmanager alert received");
        let link = match &latest {
            Some(d) => {
                let since = d.started_at.unwrap_or(d.created_at);
                let who = format!("{} {} by {}", d.short_id(), d.version, render::mention(&d.requested_by));
                if starts >= since {
                    format!("Fired {} after {who}.", span(starts - since))
                } else {
                    format!("Started {} before the latest deployment, {who}.", span(since - starts))
                }
            }
            None => format!("No deployment of {} is recorded.", env.name),
        };
        let summary = alert.summary().map(|s| format!(": {s}")).unwrap_or_default();
        let severity = alert.labels.get("severity").map(|s| format!(" [{s}]")).unwrap_or_default();
        let text = match alert.ended() {
            Some(end) => format!("✅ *{}*{severity} resolved in {} after {}{summary}\n{link}", alert.name(), env.name, span(end.timestamp_millis() - starts)),
            None if alert.resolved() => format!("✅ *{}*{severity} resolved in {}{summary}\n{link}", alert.name(), env.name),
            None => format!(
                "🔥 *{}*{severity} firing in {}{summary}\n{link}\nReact with :{}: to roll {} back.",
                alert.name(),
                env.name,
                self.config.reactions.rollback,
                env.name
            ),
        };
        self.outbox
            .send(Draft {
                key: &format!("alert:{}", alert.episode_key()),
                channel: &env.base.channel,
                thread_key: None,
                deployment_id: latest.as_ref().map(|d| d.id),
                alert_id: Some(id),
                purpose: "alert",
                text: &text,
            })
            .await
    }

    /// A reaction on an alert message: the rollback emoji asks for `/rollback <env>`, as if the
    /// person had typed it (a plain rollback needs no approval in this build, like the command).
    pub(crate) async fn alert_reaction(self: &Arc<Self>, user: &UserRef, alert: &StoredMessage, emoji: &str, added: bool) -> Result<()> {
        // Type-erased: this future nests inside every chat event's and holds a whole rollback
        // request, too deep for the compiler to check for `Send` through every layer.
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> = Box::pin(self.rollback_from_alert(user, alert, emoji, added));
        fut.await
    }

    async fn rollback_from_alert(self: &Arc<Self>, user: &UserRef, alert: &StoredMessage, emoji: &str, added: bool) -> Result<()> {
        if !added || emoji != self.config.reactions.rollback {
            return Ok(());
        }
        let env = match alert.deployment_id {
            Some(id) => self.store.deployment(id).await?.and_then(|d| EnvName::new(&d.env).ok()),
            None => None,
        }
        .or_else(|| self.config.env_for_channel(&alert.channel).map(|e| e.name.clone()));
        let Some(env) = env else {
            tracing::warn!(message = %alert.key, "a rollback reaction on an alert whose environment is unknown was ignored");
            return Ok(());
        };
        let Some(environment) = self.config.env(&env) else { return Ok(()) };
        let action = format!("roll back {env} from an alert");
        if let Some(refusal) = self.authorize(user, &action, environment, alert.deployment_id, &[super::access::Role::Deployer]).await? {
            // A reaction has no reply of its own: the refusal goes privately to whoever reacted.
            self.reply_privately(super::request_event().as_deref(), &alert.channel, &user.id, &refusal.0).await;
            return Ok(());
        }
        tracing::info!(user = %user.id, env = %env, alert = %alert.key, "rollback requested from an alert");
        // An alert about a deployment that is still running (its watch): stop it, and the
        // pipeline rolls back what it changed.
        if let Some(id) = alert.deployment_id {
            let running = [DeploymentState::Running, DeploymentState::Verifying, DeploymentState::Monitoring];
            if let Some(d) = self.store.deployment(id).await?.filter(|d| running.contains(&d.state)) {
                self.store.request_cancel(d.id, &user.id, self.now_ms()).await?;
                let text = format!("{} reacted :{}: while {} is still running: it stops at the next evaluation and rolls back what it changed.", render::mention(&user.id), self.config.reactions.rollback, d.short_id());
                return self.thread(&d, &format!("alert-rollback:{}", user.id), &text).await;
            }
        }
        let reply = self.rollback_request(user, &alert.channel, RollbackArgs { env: env.clone(), to: None, with_db: false, services: None }).await?;
        let text = format!("{} reacted :{}: — `/rollback {env}`: {}", render::mention(&user.id), self.config.reactions.rollback, reply.0);
        self.outbox
            .send(Draft {
                key: &format!("{}:rollback:{}:{}", alert.key, user.id, self.now_ms()),
                channel: &alert.channel,
                thread_key: Some(&alert.key),
                deployment_id: alert.deployment_id,
                alert_id: alert.alert_id,
                purpose: "thread",
                text: &text,
            })
            .await
    }
}
