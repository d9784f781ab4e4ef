//! The engine: chat commands and reactions in, deployments through their lifecycle, messages out.
//!
//! *Invariant*: every state change is written to the store (with its audit row) before it is
//! announced; nothing about a deployment lives only in memory. Replies to the person who typed
//! a command are private; everything about a deployment goes to its environment's channel
//! through the [`Outbox`].

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use deploybot_commands::{At, Catalog, Command, DeployArgs, EnvName, RollbackArgs};
use tokio::sync::Notify;

use crate::approval::{self, Eligibility, Outcome};
use access::Role;
use crate::chat::outbox::{Draft, Outbox};
use crate::chat::{ChatEvent, ChatPlatform, ReactionTarget, UserRef};
use crate::config::{Config, Environment};
use crate::model::*;
use crate::store::{Patch, Store};
use crate::targets::DeployTarget;

mod access;
mod alerts;
mod backup;
pub mod clock;
mod images;
mod logs;
mod notify;
mod pipeline;
mod release;
pub mod schedule;
mod watch;
pub mod render;

pub use clock::Clock;

/// Everything the engine needs, shared by the command handlers and the job runner.
pub struct Engine {
    pub config: Arc<Config>,
    pub store: Store,
    pub outbox: Outbox,
    pub chat: Arc<dyn ChatPlatform>,
    pub targets: BTreeMap<EnvName, Arc<dyn DeployTarget>>,
    pub http: reqwest::Client,
    /// `[registry]`'s credentials, shared so that an ECR token is fetched once until it expires.
    pub registry_auth: Option<Arc<crate::registry::RegistryAuth>>,
    pub clock: Arc<dyn Clock>,
    /// This replica's id, for job leases.
    pub owner: String,
    pub lease_ms: i64,
    catalog: Catalog,
    wake: Notify,
    /// Wakes the notifier (a notification was written).
    notify_wake: Notify,
    /// Deployments whose progress render is scheduled and has not read the store yet (see
    /// [`Engine::announce_soon`]).
    renders_due: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// This engine, for the tasks it spawns from `&self`.
    me: std::sync::Weak<Engine>,
}

/// How long after a step boundary its progress render reads the store ([`Engine::announce_soon`]):
/// boundaries closer together than this make one render. Far below the chat's one edit a second.
const RENDER_AFTER: std::time::Duration = std::time::Duration::from_millis(50);
/// How long a replica may hold an inbound event before another one handles it.
const INBOUND_LEASE_MS: i64 = 30_000;
/// Keeps the keys of private replies to events without an id apart.
static REPLY_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What a person is told when the store cannot be reached.
pub const STORE_UNAVAILABLE: &str = "⚠️ The bot's store is unavailable right now, so nothing was done. Try again in a minute.";
/// An event whose handling failed this many times is given up (and audited).
const INBOUND_MAX_ATTEMPTS: i64 = 5;

tokio::task_local! {
    /// The inbound event being handled, recorded with the deployment it creates.
    static REQUEST_EVENT: Option<String>;
}

/// The inbound event the current task handles, if any.
pub(crate) fn request_event() -> Option<String> {
    REQUEST_EVENT.try_with(|e| e.clone()).ok().flatten()
}

/// A private answer to the person who typed a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub String);

impl Engine {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        chat: Arc<dyn ChatPlatform>,
        targets: BTreeMap<EnvName, Arc<dyn DeployTarget>>,
        registry_auth: Option<Arc<crate::registry::RegistryAuth>>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Engine> {
        let catalog = config.catalog();
        let chat = crate::monitor::metrics::MeteredChat::wrap(chat);
        let owner = owner_id();
        let outbox = Outbox::new(store.clone(), chat.clone(), &owner);
        Arc::new_cyclic(|me| Engine {
            registry_auth,
            config,
            store,
            outbox,
            chat,
            targets,
            http: reqwest::Client::builder().user_agent("deploybot").build().unwrap_or_default(),
            clock,
            owner,
            lease_ms: 30_000,
            catalog,
            wake: Notify::new(),
            notify_wake: Notify::new(),
            renders_due: Default::default(),
            me: me.clone(),
        })
    }

    /// A registry client with `[registry]`'s credentials.
    pub fn registry(&self) -> crate::registry::Registry {
        crate::registry::Registry::with_auth(self.http.clone(), self.registry_auth.clone())
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn now_ms(&self) -> Millis {
        self.clock.now().timestamp_millis()
    }

    pub(crate) fn tz(&self) -> chrono_tz::Tz {
        self.config.bot_timezone
    }

    /// Wakes the job runner (a job became ready).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Accepts and handles one chat event (the console and tests): [`Engine::accept`], then
    /// [`Engine::process`]. An event id seen before is ignored.
    pub async fn handle(self: &Arc<Self>, event: ChatEvent) -> Result<Option<Reply>> {
        if event.event_id().is_some() && !self.accept(&event).await? {
            return Ok(None);
        }
        self.process(event).await
    }

    /// Stores an inbound event with its payload, before the platform is answered; false when its
    /// id was seen before (a retry or a redelivery). An error means it was not recorded: the
    /// transport answers "try again" (or lets the platform retry), never silence.
    pub async fn accept(&self, event: &ChatEvent) -> Result<bool> {
        let Some(id) = event.event_id() else { return Ok(true) };
        let payload = serde_json::to_string(event)?;
        let fresh = self.store.accept_event(id, self.chat.name(), &payload, &self.owner, self.now_ms(), INBOUND_LEASE_MS).await?;
        if !fresh {
            tracing::info!(event_id = id, "duplicate chat event ignored");
        }
        Ok(fresh)
    }

    /// Handles an accepted event and marks it handled. Everything it writes is keyed by the
    /// event (the deployment it requests, the reply), so handling it again after a crash
    /// changes nothing twice.
    #[tracing::instrument(skip_all, fields(event = ?event.event_id()))]
    pub async fn process(self: &Arc<Self>, mut event: ChatEvent) -> Result<Option<Reply>> {
        let id = event.event_id().map(str::to_string);
        if let ChatEvent::ReactionAdded { user, .. } | ChatEvent::ReactionRemoved { user, .. } = &mut event {
            if user.name == user.id {
                if let Some(name) = self.chat.user_name(&user.id).await {
                    user.name = name;
                }
            }
        }
        let result = REQUEST_EVENT.scope(id.clone(), Box::pin(self.dispatch(event))).await;
        if let Some(id) = &id {
            let error = result.as_ref().err().map(|e| crate::secrets::redact(&format!("{e:#}")));
            if let Err(e) = self.store.finish_event(id, error.as_deref(), self.now_ms()).await {
                tracing::warn!(error = format!("{e:#}"), event_id = %id, "could not mark an inbound event handled; it will be handled again (idempotently)");
            }
        }
        result
    }

    /// Handles the inbound events that were accepted but never handled (a crash, a dead
    /// replica): each is taken under a lease, so one replica handles it.
    pub async fn resume_inbound(self: &Arc<Self>) -> Result<usize> {
        let mut n = 0;
        while let Some((id, payload, attempts)) = self.store.claim_pending_event(&self.owner, self.now_ms(), INBOUND_LEASE_MS).await? {
            n += 1;
            if attempts > INBOUND_MAX_ATTEMPTS {
                tracing::error!(event_id = %id, attempts, "an inbound chat event failed to be handled too many times; giving up on it");
                self.store.finish_event(&id, Some("handling failed too many times"), self.now_ms()).await?;
                continue;
            }
            match serde_json::from_str::<ChatEvent>(&payload) {
                Ok(event) => {
                    tracing::warn!(event_id = %id, "handling a chat event that was accepted but not handled (the bot restarted)");
                    if let Err(e) = self.process(event).await {
                        tracing::error!(error = format!("{e:#}"), event_id = %id, "a resumed chat event could not be handled");
                    }
                }
                Err(e) => self.store.finish_event(&id, Some(&format!("unreadable payload: {e}")), self.now_ms()).await?,
            }
        }
        Ok(n)
    }

    async fn dispatch(self: &Arc<Self>, event: ChatEvent) -> Result<Option<Reply>> {
        match event {
            ChatEvent::Command { user, channel, command, text, event_id } => {
                crate::monitor::metrics::global().command(&command);
                let reply = match deploybot_commands::parse_parts(&self.catalog, &command, &text) {
                    Ok(cmd) => match self.command_boxed(&user, &channel, cmd).await {
                        Ok(r) => r,
                        Err(e) if crate::store::is_unavailable(&e) => {
                            tracing::error!(error = format!("{e:#}"), "a command failed: the store is unavailable");
                            Reply(STORE_UNAVAILABLE.to_string())
                        }
                        Err(e) => {
                            tracing::error!(error = format!("{e:#}"), "command failed");
                            Reply(format!("⚠️ Something went wrong on my side: {}. Nothing was changed by this command; try again, or ask an operator to check the bot's log.", crate::secrets::redact(&format!("{e:#}"))))
                        }
                    },
                    Err(usage) => Reply(format!("⚠️ {usage}")),
                };
                self.reply_privately(event_id.as_deref(), &channel, &user.id, &reply.0).await;
                Ok(Some(reply))
            }
            ChatEvent::ReactionAdded { user, target, emoji, .. } => {
                self.reaction(&user, &target, &emoji, true).await?;
                Ok(None)
            }
            ChatEvent::ReactionRemoved { user, target, emoji, .. } => {
                self.reaction(&user, &target, &emoji, false).await?;
                Ok(None)
            }
        }
    }

    /// The private answer to a command, through the outbox: keyed by the inbound event, so an
    /// event handled again never answers twice.
    pub(crate) async fn reply_privately(&self, event_id: Option<&str>, channel: &str, user: &str, text: &str) {
        let key = match event_id {
            Some(id) => format!("reply:{id}"),
            None => format!("reply:{user}:{}:{}", self.now_ms(), REPLY_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        };
        if let Err(e) = self.outbox.ephemeral(&key, channel, user, text).await {
            tracing::warn!(error = format!("{e:#}"), "a private reply could not be written to the outbox");
        }
    }

    /// Boxed so the futures of callers (HTTP handlers, tests) stay shallow enough for the compiler.
    fn command_boxed<'a>(self: &'a Arc<Self>, user: &'a UserRef, channel: &'a str, cmd: Command) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply>> + Send + 'a>> {
        Box::pin(self.command(user, channel, cmd))
    }

    async fn command(self: &Arc<Self>, user: &UserRef, channel: &str, cmd: Command) -> Result<Reply> {
        match cmd {
            Command::Help { topic } => Ok(Reply(deploybot_commands::help_text(topic))),
            Command::Deploy(args) => self.deploy_request(user, channel, args).await,
            Command::Rollback(args) => self.rollback_request(user, channel, args).await,
            Command::Verify { env } => self.verify_now(user, &env).await,
            Command::Status { env } => self.status(env.as_ref()).await,
            Command::History { env, limit } => {
                let entries = self.store.history(env.as_ref().map(|e| e.as_str()), limit as i64, self.tz()).await?;
                Ok(Reply(crate::store::render_history_markdown(&entries)))
            }
            Command::Stats { env, days } => {
                let now = self.now();
                let since = (now - chrono::Duration::days(days as i64)).timestamp_millis();
                let stats = self.store.stats(env.as_ref().map(|e| e.as_str()), since, days).await?;
                Ok(Reply(stats.render(env.as_ref().map_or("all environments", |e| e.as_str()))))
            }
            Command::Window { env } => Ok(self.window(env.as_ref())),
            Command::Lock { env, reason } => self.lock(user, &env, &reason).await,
            Command::Unlock { env } => self.unlock(user, &env).await,
            Command::Cancel { id } => self.cancel(user, id.get() as i64).await,
            Command::Resolve { id, note } => self.resolve(user, id.get() as i64, &note).await,
            Command::Release(args) => self.release_request(user, channel, args).await,
            Command::Logs(args) => self.logs_command(user, args).await,
        }
    }

    pub(crate) fn env(&self, name: &EnvName) -> Result<&Environment> {
        self.config.env(name).with_context(|| format!("environment {name} is not configured"))
    }

    pub(crate) async fn allowed(&self, user: &str, list: &[String]) -> Result<bool> {
        if list.iter().any(|a| a == "*" || a == user) {
            return Ok(true);
        }
        for g in list.iter().filter_map(|a| crate::approval::group_id(a)) {
            if self.chat.in_group(user, g).await.unwrap_or(false) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    // ------------------------------------------------------------------------------ /deploy

    async fn deploy_request(self: &Arc<Self>, user: &UserRef, channel: &str, args: DeployArgs) -> Result<Reply> {
        let env = self.env(&args.env)?.clone();
        let now = self.now();
        if let Some(refusal) = self.authorize(user, &format!("deploy to {}", env.name), &env, None, &[Role::Deployer]).await? {
            return Ok(refusal);
        }
        if args.hotfix.is_some() && !env.hotfix.allowed {
            return Ok(Reply(format!("🚫 Hotfixes are not allowed in {}; deploy in the window without --hotfix.", env.name)));
        }
        let services: Vec<String> = match &args.services {
            Some(list) => {
                let unknown: Vec<&str> = list.iter().map(|s| s.as_str()).filter(|s| !env.services.iter().any(|e| e.as_str() == *s)).collect();
                if !unknown.is_empty() {
                    return Ok(Reply(format!("⚠️ {} {} not deployed in {} (services there: {}).", unknown.join(", "), if unknown.len() == 1 { "is" } else { "are" }, env.name, env.services.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))));
                }
                env.services.iter().filter(|s| list.contains(s)).map(|s| s.to_string()).collect()
            }
            None => env.services.iter().map(|s| s.to_string()).collect(),
        };
        let hotfix = args.hotfix.is_some();
        let version = args.version.to_string();

        // When may it run?
        let scheduled_for = match &args.at {
            None => None,
            Some(At::NextWindow) => match env.policy.next_window(now) {
                Some(t) => Some(t),
                None => return Ok(Reply(format!("🚫 {} has no deployment window in the next 400 days.", env.name))),
            },
            Some(At::Instant(t)) => {
                let t = t.with_timezone(&Utc);
                if t < now {
                    return Ok(Reply(format!("⚠️ --at {} is in the past.", t.to_rfc3339())));
                }
                Some(t)
            }
        };
        let check_at = scheduled_for.unwrap_or(now);
        let decision = env.policy.check(check_at, hotfix);
        if !decision.allowed {
            let next = self.next_window_text(&env, now);
            let record = self.new_deployment(&env, user, channel, &version, &services, args.hotfix.clone(), DeploymentState::Denied, None, 0, None);
            let d = self.store.create_deployment(&record, now.timestamp_millis()).await?;
            self.store.transition(d.id, &[DeploymentState::Denied], DeploymentState::Denied, &Patch { error: Some(decision.reason.clone()), ..Patch::default() }, &user.id, now.timestamp_millis()).await?;
            let when = if scheduled_for.is_some() { "at that time" } else { "now" };
            return Ok(Reply(format!(
                "🚫 {} denied: {} cannot deploy to {} {when}: {}.\n{next}\nTo queue it for the next window: `/deploy {} {} --at next-window`{}",
                d.short_id(),
                version,
                env.name,
                decision.reason,
                version,
                env.name,
                if env.hotfix.allowed && !hotfix { "\nUrgent fix? `--hotfix \"reason\"` may deploy outside the window (with the hotfix approvals)." } else { "" }
            )));
        }

        // Preflight checks that can be made now (they are made again when the job starts).
        // A hotfix may roll forward over a failed rollback: it takes the environment over when it starts.
        let held = if hotfix { self.store.lock(env.name.as_str()).await? } else { None };
        let rolls_forward = match held {
            Some(held) => self.stuck_holder(&held).await?,
            None => None,
        };
        if let Some(refusal) = self.preflight_refusal(&env, &version, scheduled_for.is_some() || rolls_forward.is_some()).await? {
            return Ok(Reply(refusal));
        }

        // The checklist's automatic items: shown in the approval message; a failed required one
        // refuses the deployment here, before anything changes.
        let checklist = if crate::checklist::has_automatic_items(&env) { Some(crate::checklist::evaluate(&env, &self.config.vars, &self.http, &version).await) } else { None };

        if args.dry_run {
            let mut plan = self.plan(&env, &version, &services, hotfix).await?;
            if let Some(results) = &checklist {
                plan.push_str(&format!("\nChecklist now:\n{}", results.lines()));
            }
            return Ok(Reply(plan));
        }

        if let Some(item) = checklist.as_ref().and_then(|c| c.refusal()) {
            let reason = format!("required checklist item '{}' failed: {}", item.name, render::first_line(&item.detail));
            let record = self.new_deployment(&env, user, channel, &version, &services, args.hotfix.clone(), DeploymentState::Denied, None, 0, None);
            let d = self.store.create_deployment(&record, now.timestamp_millis()).await?;
            // Recorded with its reason already: this event was handled before.
            if d.error.is_some() {
                if let Some(reply) = handled_before(&d) {
                    return Ok(reply);
                }
            }
            self.store.transition(d.id, &[DeploymentState::Denied], DeploymentState::Denied, &Patch { error: Some(reason.clone()), ..Patch::default() }, &user.id, now.timestamp_millis()).await?;
            if let Some(results) = &checklist {
                self.record_checklist(d.id, 0, results).await?;
            }
            let lines = checklist.as_ref().map(|c| c.lines()).unwrap_or_default();
            return Ok(Reply(crate::secrets::redact(&format!("🚫 {} refused before anything changed: {reason}\n{lines}", d.short_id()))));
        }

        let (required, expires_after) = match (&env.approvals, hotfix) {
            (_, true) if env.hotfix.approvals > 0 => (env.hotfix.approvals as i64, env.approvals.as_ref().map_or(std::time::Duration::from_secs(1800), |a| a.expires_after)),
            (Some(a), false) => (a.required as i64, a.expires_after),
            _ => (0, std::time::Duration::ZERO),
        };
        let state = if required > 0 {
            DeploymentState::AwaitingApproval
        } else if scheduled_for.is_some() {
            DeploymentState::Scheduled
        } else {
            DeploymentState::Queued
        };
        let expires_at = (required > 0).then(|| (now + chrono::Duration::from_std(expires_after).unwrap_or_default()).timestamp_millis());
        let record = self.new_deployment(&env, user, channel, &version, &services, args.hotfix.clone(), state, scheduled_for.map(|t| t.timestamp_millis()), required, expires_at);

        // Unscheduled requests hold the environment from now on: of two requests at once, one wins.
        let d = self.store.create_deployment(&record, now.timestamp_millis()).await?;
        if let Some(reply) = handled_before(&d) {
            return Ok(reply);
        }
        if let Some(results) = &checklist {
            self.record_checklist(d.id, 0, results).await?;
        }
        if scheduled_for.is_none() && rolls_forward.is_none() {
            let lock = Lock { env: env.name.to_string(), kind: LockKind::Deployment, holder: user.id.clone(), reason: format!("{} {}", d.short_id(), version), deployment_id: Some(d.id), created_at: now.timestamp_millis() };
            match self.store.try_lock(&lock).await? {
                Ok(()) => {}
                // This event was handled before (a crash after the request was recorded).
                Err(held) if held.deployment_id == Some(d.id) => {}
                Err(held) => {
                    self.store.transition(d.id, &[state], DeploymentState::Cancelled, &Patch { error: Some(format!("environment locked: {}", held.reason)), ..Patch::default() }, "deploybot", self.now_ms()).await?;
                    return Ok(Reply(self.lock_refusal(&env, &held).await));
                }
            }
        }
        if required == 0 {
            // Before the request's own render: the job need not wait for it (a render never
            // replaces a later one, whichever is written first).
            self.wake();
        }
        self.announce(d.id).await?;
        if required > 0 {
            self.post_approval(d.id).await?;
        }
        let next = match state {
            DeploymentState::AwaitingApproval => format!("waiting for {required} approval(s) in the environment's channel"),
            DeploymentState::Scheduled => format!("scheduled for {}", render::local_time(record.scheduled_for.unwrap_or_default(), self.tz())),
            _ => "queued: it starts now".into(),
        };
        let next = match &rolls_forward {
            Some(failed) => format!("{next}. It rolls forward over the failed rollback {}: when it starts it takes {} over and closes {} as superseded", failed.short_id(), env.name, failed.short_id()),
            None => next,
        };
        Ok(Reply(format!("👍 {} {} → {} requested: {next}. Follow it in the channel; `/cancel {}` stops it.", d.short_id(), version, env.name, d.short_id())))
    }

    #[allow(clippy::too_many_arguments)]
    fn new_deployment(&self, env: &Environment, user: &UserRef, channel: &str, version: &str, services: &[String], hotfix: Option<String>, state: DeploymentState, scheduled_for: Option<Millis>, required: i64, expires_at: Option<Millis>) -> NewDeployment {
        NewDeployment {
            env: env.name.to_string(),
            kind: DeploymentKind::Deploy,
            version: version.to_string(),
            services: services.to_vec(),
            state,
            requested_by: user.id.clone(),
            requested_by_name: user.name.clone(),
            channel: channel.to_string(),
            hotfix_reason: hotfix,
            scheduled_for,
            rollback_of: None,
            with_db: false,
            approvals_required: required,
            approval_expires_at: expires_at,
            request_event: request_event(),
        }
    }

    pub(crate) async fn lock_refusal(&self, env: &Environment, held: &Lock) -> String {
        let stuck = match held.deployment_id {
            Some(id) if held.kind == LockKind::Deployment => self
                .store
                .deployment(id)
                .await
                .ok()
                .flatten()
                .filter(|d| matches!(d.state, DeploymentState::RollbackFailed | DeploymentState::Interrupted) && d.resolution.is_none()),
            _ => None,
        };
        let by = match held.kind {
            LockKind::Manual => format!("locked by {} since {}: \"{}\"", render::mention(&held.holder), render::local_time(held.created_at, self.tz()), held.reason),
            LockKind::Deployment => format!("held by deployment {} (requested by {}) since {}", held.reason, render::mention(&held.holder), render::local_time(held.created_at, self.tz())),
        };
        let hint = match (held.kind, &stuck) {
            (LockKind::Manual, _) => format!("Ask them, or `/unlock {}` when it is safe.", env.name),
            (LockKind::Deployment, Some(d)) if d.state == DeploymentState::RollbackFailed => format!(
                "{} ended {}: a person must decide. `/resolve {} \"what was done\"` once it is fixed by hand, or roll forward with `/deploy <version> {} --hotfix \"reason\"`.",
                d.short_id(), d.state, d.short_id(), env.name
            ),
            (LockKind::Deployment, Some(d)) => format!("{} was interrupted in a step that is not safe to repeat: check it, then `/resolve {} \"what was done\"` (or `/cancel {}`).", d.short_id(), d.short_id(), d.short_id()),
            (LockKind::Deployment, None) => "Wait for it to finish, or cancel it with `/cancel`.".to_string(),
        };
        format!("🔒 {} is {by}. {hint}", env.name)
    }

    /// The reasons a deployment cannot proceed, checked at request time and again at start.
    async fn preflight_refusal(&self, env: &Environment, version: &str, scheduled: bool) -> Result<Option<String>> {
        if !scheduled {
            if let Some(lock) = self.store.lock(env.name.as_str()).await? {
                return Ok(Some(self.lock_refusal(env, &lock).await));
            }
        }
        let missing: Vec<String> = {
            let mut m = Vec::new();
            for r in &env.requires {
                if !self.store.version_succeeded_on(r.as_str(), version).await? {
                    m.push(r.to_string());
                }
            }
            m
        };
        if !missing.is_empty() {
            return Ok(Some(format!(
                "🚫 {version} has not succeeded on {} yet; {} requires it first (promotion rule). Deploy it there: `/deploy {version} {}`",
                missing.join(", "),
                env.name,
                missing[0]
            )));
        }
        if let Some(refusal) = self.image_refusal(env, version).await? {
            return Ok(Some(refusal));
        }
        if !self.targets.contains_key(&env.name) {
            return Ok(Some(format!("⚠️ {}'s {} target is not available in this build; nothing can be deployed there.", env.name, env.target.kind())));
        }
        Ok(None)
    }

    fn next_window_text(&self, env: &Environment, now: DateTime<Utc>) -> String {
        match (env.policy.next_window(now), env.policy.timezone()) {
            (Some(t), Some(tz)) => format!("Next window: {}.", crate::policy::format_next_window(t, now, tz)),
            (Some(_), None) => "The window is open.".into(),
            (None, _) => "No window opens in the next 400 days.".into(),
        }
    }

    /// `--dry-run`: the exact plan, without doing anything.
    async fn plan(&self, env: &Environment, version: &str, services: &[String], hotfix: bool) -> Result<String> {
        let target = self.targets.get(&env.name).context("target missing")?;
        let recorded = self.store.service_versions(env.name.as_str()).await?;
        let mut lines = vec![format!("📝 Plan for {version} → {} ({} target){}, nothing was changed:", env.name, env.target.kind(), if hotfix { ", hotfix" } else { "" })];
        let mut n = 1;
        let mut step = |s: String, lines: &mut Vec<String>| {
            lines.push(format!("{n}. {s}"));
            n += 1;
        };
        step("preflight: window, lock, promotion rule, approvals re-checked".into(), &mut lines);
        if let Some(a) = &env.approvals {
            step(format!("approval: {} vote(s) from {}", if hotfix { env.hotfix.approvals } else { a.required }, a.approvers.join(", ")), &mut lines);
        }
        if env.backup.is_some() && env.step_enabled("backup") {
            step("backup: pg_dump of the database, uploaded".into(), &mut lines);
        }
        if let Some(m) = env.migrations.as_ref().filter(|_| env.step_enabled("migrations")) {
            step(format!("migrations: `{}`", m.command.join(" ")), &mut lines);
        }
        for s in services {
            let image = self.config.services.iter().find(|(k, _)| k.as_str() == s).map(|(_, c)| c.image.clone()).unwrap_or_default();
            let svc = deploybot_commands::ServiceName::new(s).map_err(anyhow::Error::msg)?;
            let current = match target.current(&svc, &image).await {
                Ok(Some(r)) => r.version,
                _ => recorded.iter().find(|r| &r.service == s).map(|r| r.version.clone()).unwrap_or_else(|| "(nothing recorded)".into()),
            };
            step(format!("deploy {s}: {image}:{current} → {image}:{version}; rollback would restore {current}"), &mut lines);
        }
        if env.step_enabled("verify") {
            step(format!("verify: {} health check(s), {} smoke test(s), {} security check(s)", env.verify.health.len(), env.verify.smoke.len(), env.verify.security.len()), &mut lines);
        }
        if let Some(m) = env.monitor.as_ref().filter(|_| env.step_enabled("monitor")) {
            step(format!("monitor: {} rule(s) and {} log pattern(s) for {}", m.rules.len(), m.log_patterns.len(), m.watch), &mut lines);
        }
        step("record: history, summary in the channel".into(), &mut lines);
        lines.extend(self.repository_preview(env, recorded.first().map(|r| r.version.as_str()), version).await);
        Ok(lines.join("\n"))
    }

    // ------------------------------------------------------------------------------ messages

    fn approval_key(id: i64) -> String {
        format!("deployment:{id}:approval")
    }

    /// Posts or edits the deployment's progress message from what the store holds.
    pub async fn announce(&self, id: i64) -> Result<()> {
        // What it reads below is at least what a render still waiting for its turn would read.
        self.renders_due.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        let d = self.store.deployment(id).await?.context("deployment vanished")?;
        let steps = self.store.steps(id).await?;
        let services = self.store.deployment_services(id).await?;
        // Only a deployment that asked for approval has votes to show: the others skip the read.
        let approvers: Vec<String> = if d.approvals_required > 0 {
            self.store.votes(id).await?.into_iter().filter(|v| v.vote == VoteKind::Approve).map(|v| v.user_name).collect()
        } else {
            Vec::new()
        };
        let text = render::progress(&d, &steps, &services, &approvers, self.tz());
        let channel = self.channel_of(&d);
        let finished = steps.iter().filter(|s| s.finished_at.is_some()).count();
        let as_of = crate::store::progress_as_of(d.rev, steps.len(), finished);
        self.outbox
            .send_as_of(Draft { key: &crate::store::progress_key(id), channel: &channel, thread_key: None, deployment_id: Some(id), alert_id: None, purpose: "progress", text: &text }, as_of)
            .await
    }

    /// [`Engine::announce`] off the caller's path, for the pipeline's step boundaries: the render
    /// runs in a task of its own, [`RENDER_AFTER`] later, and a boundary reached while an earlier
    /// one's render is still waiting to read the store adds nothing, since that render reads what
    /// this one would have. Boundaries that follow each other closely (a step's end, the next
    /// step's start, the state the deployment ends in, which [`Engine::announce`] renders at once
    /// and so takes the waiting render's place) make one render, not one each: the chat edits
    /// them once a second at most anyway. The message never goes backwards: a render is
    /// stored only if it was read from a later state than the stored one (`send_as_of`). A state
    /// a deployment ends in is announced with [`Engine::announce`], which the caller awaits, so
    /// the last render is written before the job is done.
    pub(crate) fn announce_soon(&self, id: i64) {
        let Some(engine) = self.me.upgrade() else { return };
        if !self.renders_due.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id) {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(RENDER_AFTER).await;
            // From here on, a later boundary schedules a render of its own. Gone: a render made
            // meanwhile read at least what this one would.
            if !engine.renders_due.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id) {
                return;
            }
            if let Err(e) = engine.announce(id).await {
                tracing::warn!(deployment = id, error = format!("{e:#}"), "could not render the progress message; the next step's render carries it");
            }
        });
    }

    /// Renders the end of every deployment that ended in the last day without it: a replica that
    /// dies (or loses the store) between ending a deployment and rendering it would otherwise
    /// leave its progress message showing "running" for good. Run by every replica's ticker.
    pub async fn sweep_progress_behind(&self) -> Result<()> {
        for (id, rev) in self.store.progress_behind(self.now_ms() - 86_400_000).await? {
            self.announce(id).await?;
            // A render that found the message already right changed nothing: mark it rendered, so
            // that the next sweep passes it by.
            if !self.store.progress_rendered(id, rev).await? {
                tracing::warn!(deployment = id, "a deployment had ended without its progress message showing it; rendered it now");
            }
        }
        Ok(())
    }

    /// A reply in the deployment's thread, sent once per `key_suffix`.
    pub async fn thread(&self, d: &Deployment, key_suffix: &str, text: &str) -> Result<()> {
        let channel = self.channel_of(d);
        self.outbox
            .send(Draft {
                key: &format!("deployment:{}:{key_suffix}", d.id),
                channel: &channel,
                thread_key: Some(&crate::store::progress_key(d.id)),
                deployment_id: Some(d.id),
                alert_id: None,
                purpose: "thread",
                text,
            })
            .await
    }

    pub(crate) fn channel_of(&self, d: &Deployment) -> String {
        EnvName::new(&d.env).ok().and_then(|e| self.config.env(&e)).map(|e| e.base.channel.clone()).unwrap_or_else(|| d.channel.clone())
    }

    /// Records a checklist run as a `checklist` step whose detail is one line per item.
    pub(crate) async fn record_checklist(&self, id: i64, seq: i64, results: &crate::checklist::Results) -> Result<Step> {
        let step = self.store.start_step(id, seq, "checklist", self.now_ms()).await?;
        let state = if results.refusal().is_some() { StepState::Failed } else { StepState::Succeeded };
        self.store.finish_step(step.id, state, Some(&results.lines()), self.now_ms()).await?;
        Ok(step)
    }

    pub(crate) async fn post_approval(&self, id: i64) -> Result<()> {
        let d = self.store.deployment(id).await?.context("deployment vanished")?;
        let tally = self.tally(&d).await?;
        let checked = self.store.steps(id).await?.into_iter().rfind(|s| s.name == "checklist").and_then(|s| s.detail);
        let text = render::approval(
            &d,
            &tally.render(),
            render::Checklist { checked: checked.as_deref(), manual: &self.manual_checklist(&d) },
            &self.config.reactions.approve,
            &self.config.reactions.reject,
            d.approval_expires_at.map(from_millis),
            self.tz(),
        );
        let channel = self.channel_of(&d);
        self.outbox
            .send(Draft { key: &Self::approval_key(id), channel: &channel, thread_key: None, deployment_id: Some(id), alert_id: None, purpose: "approval", text: &text })
            .await
    }

    fn manual_checklist(&self, d: &Deployment) -> Vec<String> {
        EnvName::new(&d.env).ok().and_then(|e| self.config.env(&e)).map(|e| e.checklist.manual.clone()).unwrap_or_default()
    }

    // ------------------------------------------------------------------------------ approvals

    fn approval_rule(&self, d: &Deployment) -> Option<approval::Rule> {
        let env = self.config.env(&EnvName::new(&d.env).ok()?)?;
        let base = env.approvals.as_ref();
        let approvers = if d.hotfix_reason.is_some() {
            env.hotfix.approvers.clone().or_else(|| base.map(|a| a.approvers.clone()))?
        } else {
            base?.approvers.clone()
        };
        Some(approval::Rule { required: d.approvals_required.max(0) as u32, approvers, self_approval: base.is_some_and(|a| a.self_approval) })
    }

    async fn eligibility(&self, rule: &approval::Rule, user: &str, requester: &str) -> Eligibility {
        let mut in_group = false;
        if !rule.lists_user(user) {
            for g in rule.groups() {
                if self.chat.in_group(user, g).await.unwrap_or(false) {
                    in_group = true;
                    break;
                }
            }
        }
        rule.eligibility(user, requester, in_group)
    }

    /// Counts the votes under the current config (an approver removed from it no longer counts).
    pub(crate) async fn tally(&self, d: &Deployment) -> Result<approval::Tally> {
        let votes = self.store.votes(d.id).await?;
        let rule = self.approval_rule(d);
        let mut eligible = std::collections::HashSet::new();
        if let Some(rule) = &rule {
            for v in &votes {
                if self.eligibility(rule, &v.user_id, &d.requested_by).await == Eligibility::Eligible {
                    eligible.insert(v.user_id.clone());
                }
            }
        }
        Ok(approval::tally(d.approvals_required.max(0) as u32, &votes, |u| eligible.contains(u), d.approval_expires_at, self.now_ms()))
    }

    async fn reaction(self: &Arc<Self>, user: &UserRef, target: &ReactionTarget, emoji: &str, added: bool) -> Result<()> {
        let emoji = emoji.trim_matches(':');
        let deployment_id = match target {
            ReactionTarget::Deployment(id) => Some(*id),
            ReactionTarget::Message { channel, id } => {
                let found = if channel.is_empty() { self.store.message_by_platform_id_any(id).await? } else { self.store.message_by_platform_id(channel, id).await? };
                if let Some(alert) = found.as_ref().filter(|m| m.purpose == "alert") {
                    return self.alert_reaction(user, alert, emoji, added).await;
                }
                found.filter(|m| m.purpose == "approval").and_then(|m| m.deployment_id)
            }
        };
        let Some(id) = deployment_id else { return Ok(()) };
        let vote = if emoji == self.config.reactions.approve {
            VoteKind::Approve
        } else if emoji == self.config.reactions.reject {
            VoteKind::Reject
        } else {
            return Ok(());
        };
        let Some(d) = self.store.deployment(id).await? else { return Ok(()) };
        if d.state != DeploymentState::AwaitingApproval {
            return Ok(());
        }
        let Some(rule) = self.approval_rule(&d) else { return Ok(()) };
        let now = self.now_ms();
        match self.eligibility(&rule, &user.id, &d.requested_by).await {
            Eligibility::Requester => {
                if added {
                    self.thread(&d, &format!("ignored:{}", user.id), &format!("{}, your own reaction does not count: someone else must approve {} (self-approval is off).", render::mention(&user.id), d.short_id())).await?;
                }
                return Ok(());
            }
            Eligibility::NotAnApprover => {
                if added {
                    self.thread(&d, &format!("ignored:{}", user.id), &format!("{}'s reaction does not count: they are not an approver for {} (approvers: {}).", render::mention(&user.id), d.env, access::people(&rule.approvers))).await?;
                }
                return Ok(());
            }
            Eligibility::Eligible => {}
        }
        let changed = if added {
            self.store.add_vote(&Vote { deployment_id: id, user_id: user.id.clone(), user_name: user.name.clone(), vote, created_at: now }).await?
        } else {
            self.store.withdraw_vote(id, &user.id, vote, now).await?
        };
        if changed {
            self.settle_approval(id).await?;
        }
        Ok(())
    }

    /// Applies the tally: approved → queued/scheduled, rejected or expired → closed, else re-render.
    pub(crate) async fn settle_approval(self: &Arc<Self>, id: i64) -> Result<()> {
        let Some(d) = self.store.deployment(id).await? else { return Ok(()) };
        if d.state != DeploymentState::AwaitingApproval {
            return Ok(());
        }
        let tally = self.tally(&d).await?;
        let now = self.now_ms();
        let from = [DeploymentState::AwaitingApproval];
        match &tally.outcome {
            Outcome::Pending => {}
            Outcome::Approved => {
                let next = if d.scheduled_for.is_some_and(|t| t > now) { DeploymentState::Scheduled } else { DeploymentState::Queued };
                self.store.transition(id, &from, DeploymentState::Approved, &Patch::default(), "deploybot", now).await?;
                self.store.transition(id, &[DeploymentState::Approved], next, &Patch::default(), "deploybot", now).await?;
                self.wake();
            }
            Outcome::Rejected { by } => {
                self.store.transition(id, &from, DeploymentState::Rejected, &Patch { error: Some(format!("rejected by {by}")), release_lock: true, ..Patch::default() }, "deploybot", now).await?;
            }
            Outcome::Expired => {
                self.store.transition(id, &from, DeploymentState::Expired, &Patch { error: Some("approval expired".into()), release_lock: true, ..Patch::default() }, "deploybot", now).await?;
            }
        }
        self.post_approval(id).await?;
        self.announce(id).await
    }

    /// Expires requests whose approval deadline passed (called by the scheduler).
    pub async fn expire_approvals(self: &Arc<Self>) -> Result<()> {
        for d in self.store.expired_approvals(self.now_ms()).await? {
            self.settle_approval(d.id).await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------ /rollback

    pub(crate) async fn rollback_request(self: &Arc<Self>, user: &UserRef, channel: &str, args: RollbackArgs) -> Result<Reply> {
        let env = self.env(&args.env)?.clone();
        if let Some(refusal) = self.authorize(user, &format!("roll back {}", env.name), &env, None, &[Role::Deployer]).await? {
            return Ok(refusal);
        }
        if args.with_db {
            return self.rollback_with_db_request(user, channel, args, &env).await;
        }
        let now = self.now_ms();
        let Some(last) = self.last_successful_deploy(&env).await? else {
            return Ok(Reply(format!("⚠️ Nothing to roll back in {}: no successful deployment is recorded.", env.name)));
        };
        let (to, services) = match self.rollback_target(&env, &last, &args).await? {
            Ok(target) => target,
            Err(reply) => return Ok(reply),
        };
        let record = NewDeployment {
            env: env.name.to_string(),
            kind: DeploymentKind::Rollback,
            version: to.clone(),
            services,
            state: DeploymentState::Queued,
            requested_by: user.id.clone(),
            requested_by_name: user.name.clone(),
            channel: channel.to_string(),
            hotfix_reason: None,
            scheduled_for: None,
            rollback_of: Some(last.id),
            with_db: false,
            approvals_required: 0,
            approval_expires_at: None,
            request_event: request_event(),
        };
        let d = match self.create_holding_lock(&env, &record, format!("rollback to {to}"), now).await? {
            Ok(d) => d,
            Err(reply) => return Ok(reply),
        };
        self.announce(d.id).await?;
        self.wake();
        Ok(Reply(format!("⏪ {} rolling {} back to {to} (undoing {} {}).", d.short_id(), env.name, last.short_id(), last.version)))
    }

    /// The deployment a `/rollback` undoes: the last successful deploy of the environment.
    pub(crate) async fn last_successful_deploy(&self, env: &Environment) -> Result<Option<Deployment>> {
        Ok(self
            .store
            .deployments(Some(env.name.as_str()), &[DeploymentState::Succeeded], 20)
            .await?
            .into_iter()
            .find(|d| d.kind == DeploymentKind::Deploy))
    }

    /// What a `/rollback` of `last` goes back to: `--to`, or the version `last` replaced; and its
    /// services. A reply instead when there is no previous version.
    pub(crate) async fn rollback_target(&self, env: &Environment, last: &Deployment, args: &RollbackArgs) -> Result<Result<(String, Vec<String>), Reply>> {
        let to = match &args.to {
            Some(v) => v.to_string(),
            None => match self.store.deployment_services(last.id).await?.into_iter().find_map(|s| s.from_version) {
                Some(v) => v,
                None => return Ok(Err(Reply(format!("⚠️ {} was the first deployment recorded in {}; there is no previous version. Use `--to <version>`.", last.short_id(), env.name)))),
            },
        };
        let services = match &args.services {
            Some(list) => list.iter().map(|s| s.to_string()).collect(),
            None => last.services.clone(),
        };
        Ok(Ok((to, services)))
    }

    /// Records a rollback request and takes the environment's lock for it; when someone else
    /// holds the lock the request is closed as cancelled and the refusal returned.
    pub(crate) async fn create_holding_lock(&self, env: &Environment, record: &NewDeployment, what: String, now: Millis) -> Result<Result<Deployment, Reply>> {
        let d = self.store.create_deployment(record, now).await?;
        if let Some(reply) = handled_before(&d) {
            return Ok(Err(reply));
        }
        let lock = Lock { env: env.name.to_string(), kind: LockKind::Deployment, holder: record.requested_by.clone(), reason: format!("{} {what}", d.short_id()), deployment_id: Some(d.id), created_at: now };
        if let Err(held) = self.store.try_lock(&lock).await? {
            self.store.transition(d.id, &[record.state], DeploymentState::Cancelled, &Patch { error: Some("environment locked".into()), ..Patch::default() }, "deploybot", now).await?;
            return Ok(Err(Reply(self.lock_refusal(env, &held).await)));
        }
        Ok(Ok(d))
    }

    // ------------------------------------------------------------------------------ other commands

    async fn verify_now(&self, user: &UserRef, env: &EnvName) -> Result<Reply> {
        let env = self.env(env)?;
        let current = self.store.service_versions(env.name.as_str()).await?;
        let version = current.first().map(|s| s.version.clone()).unwrap_or_default();
        let report = crate::verify::run_in(&env.verify, &crate::verify::Vars::new(version.clone(), env.name.to_string(), format!("verify-{}", self.now_ms())), &self.http, &self.config.vars).await;
        let text = format!("{} /verify {} by {}: {}\n{}", if report.ok { "✅" } else { "❌" }, env.name, render::mention(&user.id), report.summary(), report.details());
        self.outbox
            .send(Draft { key: &format!("verify:{}:{}", env.name, self.now_ms()), channel: &env.base.channel, thread_key: None, deployment_id: None, alert_id: None, purpose: "verify", text: &text })
            .await?;
        Ok(Reply(format!("{} {}", if report.ok { "✅" } else { "❌" }, report.summary())))
    }

    async fn status(&self, env: Option<&EnvName>) -> Result<Reply> {
        let envs: Vec<&Environment> = match env {
            Some(e) => vec![self.env(e)?],
            None => self.config.environments.values().collect(),
        };
        let mut out = Vec::new();
        for env in envs {
            let mut lines = vec![format!("*{}* ({} target; window: {})", env.name, env.target.kind(), if env.policy.check(self.now(), false).allowed { "open" } else { "closed" })];
            let running = self.store.service_versions(env.name.as_str()).await?;
            let live = self.live_versions(env).await;
            for (s, live) in env.services.iter().zip(live) {
                let recorded = running.iter().find(|r| r.service == s.as_str());
                let v = match recorded {
                    Some(r) => match self.released_digest(&r.version, s.as_str()).await? {
                        Some(digest) => format!("{} (#{}, {})", r.version, r.deployment_id.unwrap_or_default(), crate::registry::short_digest(&digest)),
                        None => format!("{} (#{})", r.version, r.deployment_id.unwrap_or_default()),
                    },
                    None => "nothing recorded".into(),
                };
                let drift = drift_note(env.target.kind(), recorded.map(|r| r.version.as_str()), &live);
                lines.push(format!("  {s}: {v}{drift}"));
            }
            if let Some(lock) = self.store.lock(env.name.as_str()).await? {
                lines.push(format!("  🔒 {}", self.lock_refusal(env, &lock).await.trim_start_matches("🔒 ")));
            }
            let mut states: Vec<DeploymentState> = DeploymentState::ALL.into_iter().filter(|s| s.is_in_flight()).collect();
            states.push(DeploymentState::Scheduled);
            for d in self.store.deployments(Some(env.name.as_str()), &states, 20).await? {
                lines.push(format!("  {} {} {} by {} — {}", d.state.emoji(), d.short_id(), d.version, render::mention(&d.requested_by), d.state.as_str().replace('_', " ")));
            }
            out.push(lines.join("\n"));
        }
        Ok(Reply(out.join("\n")))
    }

    /// What each service of `env` runs according to its target (`current()`), asked for all
    /// services at once, each within [`LIVE_TIMEOUT`].
    pub(crate) async fn live_versions(&self, env: &Environment) -> Vec<Live> {
        let Some(target) = self.targets.get(&env.name).cloned() else {
            return env.services.iter().map(|_| Live::Unknown("no target".into())).collect();
        };
        let asks = env.services.iter().map(|s| {
            let target = target.clone();
            let image = self.image_of(s.as_str());
            async move {
                match tokio::time::timeout(LIVE_TIMEOUT, target.current(s, &image)).await {
                    Ok(Ok(Some(r))) => Live::Runs(r.version),
                    Ok(Ok(None)) => Live::Nothing,
                    Ok(Err(e)) => Live::Unknown(crate::secrets::redact(&e.to_string())),
                    Err(_) => Live::Unknown(format!("no answer within {} s", LIVE_TIMEOUT.as_secs())),
                }
            }
        });
        futures_util::future::join_all(asks).await
    }

    fn window(&self, env: Option<&EnvName>) -> Reply {
        let now = self.now();
        let envs: Vec<&Environment> = match env.and_then(|e| self.config.env(e)) {
            Some(e) => vec![e],
            None => self.config.environments.values().collect(),
        };
        let lines: Vec<String> = envs
            .iter()
            .map(|e| {
                let d = e.policy.check(now, false);
                let state = if d.allowed { "🟢 open now" } else { "🔴 closed now" };
                let next = if d.allowed { String::new() } else { format!(" {}", self.next_window_text(e, now)) };
                format!("*{}*: {state} ({}).{next}\n  Rule: {}", e.name, d.reason, e.policy.describe())
            })
            .collect();
        Reply(lines.join("\n"))
    }

    async fn lock(&self, user: &UserRef, env: &EnvName, reason: &str) -> Result<Reply> {
        let env = self.env(env)?;
        if let Some(refusal) = self.authorize(user, &format!("lock {}", env.name), env, None, &[Role::Deployer]).await? {
            return Ok(refusal);
        }
        let lock = Lock { env: env.name.to_string(), kind: LockKind::Manual, holder: user.id.clone(), reason: reason.to_string(), deployment_id: None, created_at: self.now_ms() };
        match self.store.try_lock(&lock).await? {
            Ok(()) => {
                self.outbox
                    .send(Draft { key: &format!("lock:{}:{}", env.name, lock.created_at), channel: &env.base.channel, thread_key: None, deployment_id: None, alert_id: None, purpose: "lock", text: &format!("🔒 {} locked by {}: \"{reason}\". Deployments are refused until `/unlock {}`.", env.name, render::mention(&user.id), env.name) })
                    .await?;
                Ok(Reply(format!("🔒 {} is locked: \"{reason}\".", env.name)))
            }
            Err(held) => Ok(Reply(self.lock_refusal(env, &held).await)),
        }
    }

    async fn unlock(&self, user: &UserRef, env: &EnvName) -> Result<Reply> {
        let env = self.env(env)?;
        let Some(held) = self.store.lock(env.name.as_str()).await? else {
            return Ok(Reply(format!("{} was not locked.", env.name)));
        };
        if held.kind == LockKind::Deployment {
            let refusal = self.lock_refusal(env, &held).await;
            return Ok(Reply(format!("⚠️ `/unlock` releases manual locks only. {refusal}")));
        }
        let holder = Role::Is(&held.holder, "whoever locked it");
        if let Some(refusal) = self.authorize(user, &format!("unlock {}", env.name), env, None, &[holder, Role::Approver]).await? {
            return Ok(refusal);
        }
        match self.store.release_manual_lock(env.name.as_str(), &user.id, self.now_ms()).await? {
            Some(l) if l.kind == LockKind::Manual => {
                self.outbox
                    .send(Draft { key: &format!("unlock:{}:{}", env.name, self.now_ms()), channel: &env.base.channel, thread_key: None, deployment_id: None, alert_id: None, purpose: "lock", text: &format!("🔓 {} unlocked by {} (was: \"{}\").", env.name, render::mention(&user.id), l.reason) })
                    .await?;
                Ok(Reply(format!("🔓 {} is unlocked.", env.name)))
            }
            Some(l) => Ok(Reply(format!("⚠️ {} is now held by deployment {}, not by a manual lock.", env.name, l.reason))),
            None => Ok(Reply(format!("{} was not locked.", env.name))),
        }
    }

    async fn cancel(self: &Arc<Self>, user: &UserRef, id: i64) -> Result<Reply> {
        let Some(d) = self.store.deployment(id).await? else {
            return Ok(Reply(format!("⚠️ There is no deployment #{id}.")));
        };
        if let Some(env) = EnvName::new(&d.env).ok().and_then(|e| self.config.env(&e)) {
            let requester = Role::Is(&d.requested_by, "its requester");
            if let Some(refusal) = self.authorize(user, &format!("cancel {}", d.short_id()), env, Some(id), &[requester, Role::Deployer, Role::Approver]).await? {
                return Ok(refusal);
            }
        }
        let now = self.now_ms();
        let waiting = [DeploymentState::Requested, DeploymentState::AwaitingApproval, DeploymentState::Approved, DeploymentState::Queued, DeploymentState::Scheduled];
        if waiting.contains(&d.state) {
            let patch = Patch { error: Some(format!("cancelled by {}", user.name)), release_lease: true, release_lock: true, ..Patch::default() };
            if self.store.transition(id, &waiting, DeploymentState::Cancelled, &patch, &user.id, now).await? {
                self.announce(id).await?;
                if d.approvals_required > 0 {
                    self.post_approval(id).await?;
                }
                return Ok(Reply(format!("🛑 {} cancelled before it ran; nothing was changed.", d.short_id())));
            }
        }
        let Some(d) = self.store.deployment(id).await? else { return Ok(Reply(format!("⚠️ There is no deployment #{id}."))) };
        if d.state.is_executing() || d.state == DeploymentState::Interrupted {
            if d.state == DeploymentState::Interrupted {
                let patch = Patch { error: Some(format!("cancelled by {} after an interruption", user.name)), finished_at: Some(now), release_lease: true, release_lock: true, ..Patch::default() };
                self.store.transition(id, &[DeploymentState::Interrupted], DeploymentState::Cancelled, &patch, &user.id, now).await?;
                self.announce(id).await?;
                return Ok(Reply(format!("🛑 {} closed; {} is unlocked. Check what runs there with `/status {}`.", d.short_id(), d.env, d.env)));
            }
            self.store.request_cancel(id, &user.id, now).await?;
            self.thread(&d, "cancel", &format!("🛑 {} asked to cancel; the job stops at its next safe point and rolls back what it changed.", render::mention(&user.id))).await?;
            return Ok(Reply(format!("🛑 {} is {}: it stops at the next safe point and rolls back what it changed.", d.short_id(), d.state.as_str().replace('_', " "))));
        }
        Ok(Reply(format!("{} already ended ({}); nothing to cancel.", d.short_id(), d.state)))
    }
}

impl Engine {
    /// `/resolve #id "note"`: a person closes a failed rollback or an interrupted deployment
    /// after fixing things by hand; the environment is released.
    async fn resolve(self: &Arc<Self>, user: &UserRef, id: i64, note: &str) -> Result<Reply> {
        let Some(d) = self.store.deployment(id).await? else {
            return Ok(Reply(format!("⚠️ There is no deployment #{id}.")));
        };
        let Some(env) = EnvName::new(&d.env).ok().and_then(|e| self.config.env(&e)).cloned() else {
            return Ok(Reply(format!("⚠️ {} belongs to {}, which is no longer configured.", d.short_id(), d.env)));
        };
        if let Some(refusal) = self.authorize(user, &format!("resolve {} in {}", d.short_id(), env.name), &env, Some(id), &[Role::Approver]).await? {
            return Ok(refusal);
        }
        if let Some(how) = &d.resolution {
            // Closed before; a crash may have come between that and releasing the environment.
            let freed = self.store.release_deployment_lock(&d.env, id, self.now_ms()).await?;
            let tail = if freed { format!(" {} was still held by it and is released now.", d.env) } else { String::new() };
            return Ok(Reply(format!("{} is already closed: {how}.{tail}", d.short_id())));
        }
        let now = self.now_ms();
        let resolution = format!("resolved by {}: {note}", user.name);
        match d.state {
            DeploymentState::RollbackFailed => {}
            DeploymentState::Interrupted => {
                let patch = Patch { failed_at: Some(now), finished_at: Some(now), error: Some(format!("interrupted; {resolution}")), release_lease: true, ..Patch::default() };
                if !self.store.transition(id, &[DeploymentState::Interrupted], DeploymentState::Failed, &patch, &user.id, now).await? {
                    return Ok(Reply(format!("⚠️ {} changed state meanwhile; look at `/status {}` and try again.", d.short_id(), d.env)));
                }
            }
            other => {
                let hint = if other.is_terminal() {
                    "it has ended and holds nothing".to_string()
                } else {
                    format!("it is {}; `/cancel {}` stops it", other.as_str().replace('_', " "), d.short_id())
                };
                return Ok(Reply(format!("⚠️ `/resolve` closes deployments that ended rollback_failed or were interrupted; {} is not one ({hint}).", d.short_id())));
            }
        }
        if !self.store.set_resolution(id, &resolution, &user.id, now).await? {
            return Ok(Reply(format!("{} was closed by someone else meanwhile.", d.short_id())));
        }
        self.store.add_issue(id, &resolution, now).await?;
        let released = self.store.release_deployment_lock(&d.env, id, now).await?;
        let free = if released { format!("{} is released.", d.env) } else { format!("{} was not held by it.", d.env) };
        self.thread(&d, "resolved", &format!("✅ {} resolved by {}: \"{note}\". {free}", d.short_id(), render::mention(&user.id))).await?;
        self.ended(id).await;
        self.announce(id).await?;
        Ok(Reply(format!("✅ {} resolved; your note is in its history. {free}", d.short_id())))
    }

    /// The deployment holding `lock` when it ended `rollback_failed` and nobody has closed it.
    pub(crate) async fn stuck_holder(&self, lock: &Lock) -> Result<Option<Deployment>> {
        let Some(id) = lock.deployment_id.filter(|_| lock.kind == LockKind::Deployment) else { return Ok(None) };
        Ok(self.store.deployment(id).await?.filter(|d| d.state == DeploymentState::RollbackFailed && d.resolution.is_none()))
    }

    /// Hands the environment from a failed rollback to the hotfix rolling forward, and says so
    /// in both; false when the failed one no longer holds it.
    pub(crate) async fn supersede(&self, failed: &Deployment, by: &Deployment, lock: &Lock) -> Result<bool> {
        let now = self.now_ms();
        if !self.store.take_over_lock(failed.id, lock).await? {
            return Ok(false);
        }
        let hotfix = by.hotfix_reason.as_deref().unwrap_or_default();
        self.store.set_resolution(failed.id, &format!("superseded by {} ({} hotfix by {}: {hotfix})", by.short_id(), by.version, by.requested_by_name), &by.requested_by, now).await?;
        self.store.set_resolution(by.id, &format!("rolled forward over the failed rollback {}", failed.short_id()), &by.requested_by, now).await?;
        self.thread(failed, "superseded", &format!("⏩ {} is superseded: {} ({} hotfix) rolls forward and has taken {} over.", failed.short_id(), by.short_id(), by.version, failed.env)).await?;
        self.thread(by, "supersedes", &format!("⏩ {} rolls forward over the failed rollback {} and has taken {} over.", by.short_id(), failed.short_id(), by.env)).await?;
        self.announce(failed.id).await?;
        Ok(true)
    }
}

/// A request recorded by an earlier handling of the same chat event that has since ended (a
/// crash came between recording it and marking the event handled): nothing more to do, and the
/// environment must not be taken again for it.
fn handled_before(d: &Deployment) -> Option<Reply> {
    (d.request_event.is_some() && d.state.is_terminal()).then(|| Reply(format!("{} was already requested by this command; it {}.", d.short_id(), d.state.as_str().replace('_', " "))))
}

/// This process's id for leases: the host and pid say where it runs, and a random part keeps two
/// processes apart when those collide (containers all called `deploybot`, pid 1 in each).
fn owner_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default());
    format!("{}-{}-{:016x}", hostname(), std::process::id(), h.finish())
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "deploybot".into())
}

/// How long `/status` waits for a target to say what runs.
const LIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a target says runs for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Live {
    Runs(String),
    /// The target reports nothing deployed, or cannot tell (a `command` target without `current`).
    Nothing,
    /// Asking failed; why.
    Unknown(String),
}

/// How a target kind is named in a drift line.
fn target_label(kind: &str) -> &'static str {
    match kind {
        "ecs" => "ECS",
        "docker" => "Docker",
        "azure_aci" => "ACI",
        _ => "the target",
    }
}

/// The part of a `/status` line after what the bot recorded: empty when the target agrees,
/// `⚠️ drift: ECS runs v1.0.2, deploybot recorded v1.0.1` when it does not.
pub(crate) fn drift_note(kind: &str, recorded: Option<&str>, live: &Live) -> String {
    if let Some(drift) = drift(kind, recorded, live) {
        return format!(" — ⚠️ drift: {drift}");
    }
    match (live, recorded) {
        (Live::Runs(_), _) => " ✓ runs".to_string(),
        (Live::Nothing, _) => String::new(),
        (Live::Unknown(why), _) => format!(" (could not ask {}: {why})", target_label(kind)),
    }
}

/// `ECS runs v1.0.2, deploybot recorded v1.0.1` when what runs differs from the record; `None`
/// when they agree or the target cannot tell.
pub(crate) fn drift(kind: &str, recorded: Option<&str>, live: &Live) -> Option<String> {
    let label = target_label(kind);
    match (live, recorded) {
        (Live::Runs(v), Some(r)) if v == r => None,
        (Live::Runs(v), Some(r)) => Some(format!("{label} runs {v}, deploybot recorded {r}")),
        (Live::Runs(v), None) => Some(format!("{label} runs {v}, deploybot recorded nothing")),
        (Live::Nothing, Some(r)) if kind != "command" => Some(format!("{label} runs nothing, deploybot recorded {r}")),
        _ => None,
    }
}
