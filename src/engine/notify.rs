//! Notifications (`[[notify]]`) and the history commit (`[bot] history_repo`): written to the
//! store when a deployment reaches a state (never sent from the pipeline), delivered by the
//! notifier task of any replica, retried with backoff, given up after [`MAX_ATTEMPTS`] with a
//! note in the deployment's thread. A key per (deployment, notifier, event) means a state
//! reached again or a handler run twice never sends twice.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use super::Engine;
use crate::model::{Deployment, DeploymentState};
use crate::notify::{self, Delivery, NotifyConfig, Record, ServiceRecord};
use crate::store::{NewNotification, StoredNotification};

/// Deliveries tried per notification before it is given up and reported in the thread.
pub const MAX_ATTEMPTS: i64 = 5;
/// The first retry waits this long; each next one twice as long (0.5, 1, 2, 4 s), at most [`MAX_BACKOFF`].
const FIRST_BACKOFF_MS: i64 = 500;
const MAX_BACKOFF: i64 = 60_000;
/// How long a replica holds the notification it delivers: longer than the slowest delivery (an
/// SMTP exchange times out after its `timeout`; each git command after 2 min), so that another
/// replica takes one over only when its deliverer died.
const LEASE_MS: i64 = 600_000;
/// How often the notifier looks for work when nothing woke it.
const IDLE_POLL: Duration = Duration::from_secs(2);
const HISTORY: &str = "history";

impl Engine {
    /// A deployment reached `d.state`: writes what `[[notify]]` wants sent about it and, once it
    /// has ended, the history commit. Never fails the caller: a problem is logged.
    pub async fn notify_state(&self, id: i64) {
        if let Err(e) = self.write_notifications(id).await {
            tracing::error!(error = format!("{e:#}"), deployment = id, "could not write the deployment's notifications");
        }
    }

    async fn write_notifications(&self, id: i64) -> Result<()> {
        // Nothing to tell anyone: no read of the deployment at every transition.
        if self.config.notify.is_empty() && self.config.bot.history_repo.is_none() {
            return Ok(());
        }
        let d = self.store.deployment(id).await?.context("deployment vanished")?;
        let event = d.state.as_str();
        let ended = d.state.is_terminal();
        let wanted: Vec<(usize, &NotifyConfig)> = self.config.notify.iter().enumerate().filter(|(_, n)| n.wants(&d.env, event)).collect();
        let history = ended && self.config.bot.history_repo.is_some();
        if wanted.is_empty() && !history {
            return Ok(());
        }
        let record = self.notify_record(&d, event).await?;
        let payload = serde_json::to_string(&record)?;
        let now = self.now_ms();
        for (i, n) in wanted {
            let row = NewNotification { key: format!("{}:{i}:{event}", d.id), deployment_id: d.id, notifier: i.to_string(), kind: n.kind().into(), event: event.into(), payload: payload.clone() };
            self.store.notify_put(&row, now).await?;
        }
        if history {
            // Keyed by the deployment's revision: a resolution later changes the history again.
            let row = NewNotification { key: format!("{}:{HISTORY}:{}", d.id, d.rev), deployment_id: d.id, notifier: HISTORY.into(), kind: "history_repo".into(), event: event.into(), payload };
            self.store.notify_put(&row, now).await?;
        }
        self.notify_wake.notify_one();
        Ok(())
    }

    /// The deployment's record as notifiers get it.
    async fn notify_record(&self, d: &Deployment, event: &str) -> Result<Record> {
        let approvers: Vec<String> = self.store.votes(d.id).await?.into_iter().filter(|v| v.vote == crate::model::VoteKind::Approve).map(|v| v.user_name).collect();
        let services = self
            .store
            .deployment_services(d.id)
            .await?
            .into_iter()
            .map(|s| ServiceRecord { service: s.service, from: s.from_version, to: s.to_version, state: s.state })
            .collect();
        let checks = self
            .store
            .steps(d.id)
            .await?
            .into_iter()
            .map(|s| match s.detail.as_deref().map(|t| t.lines().next().unwrap_or_default()).filter(|t| !t.is_empty()) {
                Some(detail) => format!("{}: {} — {detail}", s.name, s.state.as_str()),
                None => format!("{}: {}", s.name, s.state.as_str()),
            })
            .collect();
        let tz = self.tz();
        let entry = if d.state.is_terminal() {
            self.store.history(Some(&d.env), 20, tz).await?.into_iter().find(|e| e.id == d.id)
        } else {
            None
        };
        let time = |ms: Option<i64>| ms.map(|m| super::render::local_time(m, tz));
        Ok(Record {
            id: d.id,
            event: event.to_string(),
            env: d.env.clone(),
            kind: d.kind.as_str().to_string(),
            version: d.version.clone(),
            state: d.state.as_str().to_string(),
            requested_by: d.requested_by_name.clone(),
            approvers,
            hotfix: d.hotfix_reason.clone(),
            services,
            started_at: time(d.started_at),
            finished_at: time(d.finished_at),
            duration_seconds: d.duration_ms().map(|ms| ms / 1000),
            checks,
            issues: entry.as_ref().and_then(|e| e.issues.clone()).or_else(|| d.issues.clone()),
            rollback: entry.as_ref().and_then(|e| e.rollback.clone()),
            error: d.error.clone(),
            history: entry.map(|e| crate::store::render_history_markdown(&[e])),
        })
    }

    /// The notifier task (on every replica): delivers what is due until shutdown.
    pub async fn run_notifier(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let busy = match self.deliver_notifications().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "could not read the notifications; retrying");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = self.notify_wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Delivers the notifications that are due now, one claim at a time (a claim never waits
    /// behind another delivery); how many were tried.
    pub async fn deliver_notifications(&self) -> Result<usize> {
        let claimed = self.store.notify_claim(&self.owner, self.now_ms(), LEASE_MS, 1).await?;
        let n = claimed.len();
        for row in claimed {
            self.deliver(row).await?;
        }
        Ok(n)
    }

    /// Delivers until nothing is pending or `within` has passed (tests and the demo, which drive
    /// the engine themselves); true when nothing is left pending.
    pub async fn drain_notifications(&self, within: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.deliver_notifications().await?;
            if self.store.notifications_pending().await? == 0 {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn deliver(&self, row: StoredNotification) -> Result<()> {
        let record: Record = serde_json::from_str(&row.payload).context("a stored notification is unreadable")?;
        let outcome = match self.send(&row, &record).await {
            Ok(outcome) => outcome,
            Err(wait) => {
                // Waits for the notification before it (the maintenance its completion closes).
                self.store.notify_release(row.id, &self.owner, self.now_ms() + wait).await?;
                return Ok(());
            }
        };
        let now = self.now_ms();
        let what = self.describe(&row);
        match outcome {
            Delivery::Done(result) => {
                self.store.notify_mark_delivered(row.id, &self.owner, result.as_deref(), now).await?;
                tracing::info!(deployment = row.deployment_id, notification = %row.key, "{what} delivered");
            }
            Delivery::Retry(why) if row.attempts + 1 < MAX_ATTEMPTS => {
                let backoff = (FIRST_BACKOFF_MS << row.attempts.min(16)).min(MAX_BACKOFF);
                tracing::warn!(deployment = row.deployment_id, notification = %row.key, attempt = row.attempts + 1, error = %why, "{what} failed; retrying");
                self.store.notify_mark_failed(row.id, &why, Some(now + backoff), now).await?;
            }
            Delivery::Retry(why) | Delivery::Refused(why) => {
                let attempts = row.attempts + 1;
                tracing::error!(deployment = row.deployment_id, notification = %row.key, attempts, error = %why, "{what} given up");
                self.store.notify_mark_failed(row.id, &why, None, now).await?;
                if let Some(d) = self.store.deployment(row.deployment_id).await? {
                    let tries = if attempts == 1 { "at the first attempt".to_string() } else { format!("after {attempts} attempts") };
                    let text = format!("⚠️ {what} about {} ({}) could not be delivered {tries}: {why}", d.short_id(), row.event.replace('_', " "));
                    self.thread(&d, &format!("notify-failed:{}", row.key), &crate::secrets::redact(&text)).await?;
                }
            }
        }
        Ok(())
    }

    /// `the email notification to team@example.com`, `the history commit to …`.
    fn describe(&self, row: &StoredNotification) -> String {
        if row.notifier == HISTORY {
            let repo = self.config.bot.history_repo.as_deref().map(crate::secrets::display_url).unwrap_or_default();
            return format!("The history commit to {repo}");
        }
        match row.notifier.parse::<usize>().ok().and_then(|i| self.config.notify.get(i)) {
            Some(NotifyConfig::Email(c)) => format!("The email notification to {}", c.to.join(", ")),
            Some(NotifyConfig::Statuspage(c)) => format!("The Statuspage update of page {}", c.page_id),
            Some(NotifyConfig::Webhook(c)) => format!("The webhook to {}", crate::secrets::display_url(&c.url)),
            None => format!("The {} notification", row.kind),
        }
    }

    /// Sends one notification; `Err(wait)` when it must wait for an earlier one first.
    async fn send(&self, row: &StoredNotification, record: &Record) -> Result<Delivery, i64> {
        let vars = &self.config.vars;
        if row.notifier == HISTORY {
            return Ok(self.commit_history(record).await);
        }
        let Some(config) = row.notifier.parse::<usize>().ok().and_then(|i| self.config.notify.get(i)) else {
            return Ok(Delivery::Refused(format!("[[notify]] entry {} is no longer configured", row.notifier)));
        };
        Ok(match config {
            NotifyConfig::Email(c) => notify::email::send(c, vars, &row.key, record).await,
            NotifyConfig::Webhook(c) => notify::webhook::send(c, vars, &self.http, &row.key, record).await,
            NotifyConfig::Statuspage(c) => {
                let token = match c.token.resolve_in(vars) {
                    Ok(t) => t,
                    Err(e) => return Ok(Delivery::Retry(format!("statuspage token: {e}"))),
                };
                if record.event == DeploymentState::Running.as_str() {
                    notify::statuspage::open(c, token.expose(), &self.http, record, self.now()).await
                } else {
                    // The maintenance the running state opened, if this entry was told about it.
                    let opened = self.store.notification(&format!("{}:{}:running", row.deployment_id, row.notifier)).await.ok().flatten();
                    match opened {
                        Some(o) if o.state == "pending" => return Err(1_000),
                        Some(o) => notify::statuspage::close(c, token.expose(), &self.http, record, o.result.as_deref()).await,
                        None => notify::statuspage::close(c, token.expose(), &self.http, record, None).await,
                    }
                }
            }
        })
    }

    /// Commits the history file, as it is in the store now, to `[bot] history_repo`.
    async fn commit_history(&self, record: &Record) -> Delivery {
        let Some(repo) = self.config.bot.history_repo.as_deref() else { return Delivery::Refused("[bot] history_repo is no longer configured".into()) };
        let entries = match self.store.history(None, 200, self.tz()).await {
            Ok(e) => e,
            Err(e) => return Delivery::Retry(format!("cannot read the history: {e:#}")),
        };
        let markdown = crate::store::render_history_markdown(&entries);
        let file = notify::history_git::path_in_repo(self.config.bot.history_file.as_deref());
        let message = format!("deploybot: #{} {} {} {}", record.id, record.env, record.version, record.event.replace('_', " "));
        notify::history_git::commit_and_push(repo, &self.config.bot.history_branch, &file, &markdown, &message).await
    }
}
