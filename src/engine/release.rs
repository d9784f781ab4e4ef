//! `/release <version> [--ref R] [--dry-run]`: who may, the dry run, and the release itself —
//! fetch, resolve, tag, build steps in a clean checkout of the tag, image builds, then (only when
//! every build succeeded) the pushes, the tag push and the record. One progress message in the
//! channel the command came from, edited in place; the release notes in its thread.
//!
//! A failure at any step ends the release `failed` with the step's output tail: the local tag it
//! made is deleted, the images it built are untagged, nothing is pushed after the failure and no
//! image is recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use deploybot_commands::{ReleaseArgs, ServiceName};

use super::access::people;
use super::{render, Engine, Reply};
use crate::chat::outbox::Draft;
use crate::chat::UserRef;
use crate::registry::ImageRef;
use crate::release::git::Repo;
use crate::config::Environment;
use crate::release::{image, migrations, notes, BuildConfig, ReleaseConfig};
use crate::store::ReleaseImage;

/// At most this many commits are listed in the notes.
const NOTES_COMMITS: usize = 200;
/// At most this many pending migration scripts are listed in a dry run.
const MIGRATIONS_LISTED: usize = 50;
/// A running release's heartbeat: renewed every third of this; a release not renewed for this
/// long was abandoned (its process died) and no longer holds its version.
const ALIVE_MS: i64 = 60_000;

/// How a running release shows itself: one message, a line per step.
struct Progress<'a> {
    engine: &'a Engine,
    key: String,
    channel: String,
    header: String,
    lines: Vec<String>,
}

impl Progress<'_> {
    async fn show(&self, footer: &str) {
        let mut text = self.header.clone();
        for l in &self.lines {
            text.push('\n');
            text.push_str(l);
        }
        if !footer.is_empty() {
            text.push('\n');
            text.push_str(footer);
        }
        let text = crate::secrets::redact(&text);
        let draft = Draft { key: &self.key, channel: &self.channel, thread_key: None, deployment_id: None, alert_id: None, purpose: "release", text: &text };
        if let Err(e) = self.engine.outbox.send(draft).await {
            tracing::warn!(error = format!("{e:#}"), "the release's progress message could not be written");
        }
    }

    async fn start(&mut self, what: impl Into<String>) {
        self.lines.push(format!("⏳ {}", what.into()));
        self.show("").await;
    }

    async fn done(&mut self, what: impl Into<String>) {
        if let Some(last) = self.lines.last_mut() {
            *last = format!("✅ {}", what.into());
        }
        self.show("").await;
    }

    fn failed(&mut self, what: &str) {
        if let Some(last) = self.lines.last_mut() {
            *last = format!("❌ {what}");
        }
    }
}

/// What a release made that must be undone when it fails.
#[derive(Default)]
struct Made {
    /// The local tag it created (not yet pushed).
    tag: Option<String>,
    /// Images built locally.
    images: Vec<String>,
}

/// A step that failed: what it was, and why (with its output tail).
struct Failure {
    step: String,
    message: String,
}

fn fail(step: impl Into<String>) -> impl FnOnce(String) -> Failure {
    let step = step.into();
    move |message| Failure { step, message }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

impl Engine {
    /// Who may `/release`: `[release] releasers`, else the deployers of the first environment in
    /// promotion order; and how to name them.
    fn releasers(&self, release: &ReleaseConfig) -> (Vec<String>, String) {
        if let Some(list) = &release.releasers {
            return (list.clone(), "[release] releasers".into());
        }
        let roots = self.config.environments.values().filter(|e| e.requires.is_empty());
        let required = |name: &str| self.config.environments.values().any(|e| e.requires.iter().any(|r| r.as_str() == name));
        let first = roots.clone().find(|e| required(e.name.as_str())).or_else(|| roots.clone().next());
        match first {
            Some(env) => (env.base.deployers.clone(), format!("the deployers of {}, the first environment in promotion order", env.name)),
            None => (Vec::new(), "nobody".into()),
        }
    }

    /// The services `/release` builds: those with a `[services.X.build]` table, in deploy order.
    fn release_services(&self) -> Vec<(ServiceName, String, BuildConfig)> {
        let mut out: Vec<(u32, ServiceName, String, BuildConfig)> = self
            .config
            .services
            .iter()
            .filter_map(|(name, s)| s.build.clone().map(|b| (s.order, name.clone(), s.image.clone(), b)))
            .collect();
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out.into_iter().map(|(_, n, i, b)| (n, i, b)).collect()
    }

    /// `[release] dir`, absolute (git worktrees and build steps need it so).
    fn release_dir(release: &ReleaseConfig) -> PathBuf {
        std::path::absolute(&release.dir).unwrap_or_else(|_| PathBuf::from(&release.dir))
    }

    pub(crate) async fn release_request(self: &Arc<Self>, user: &UserRef, channel: &str, args: ReleaseArgs) -> Result<Reply> {
        let Some(release) = self.config.release.clone() else {
            return Ok(Reply(
                "🚫 /release is not set up here: add a [release] table (repo = a path or clone URL) and a [services.<name>.build] table for each image."
                    .into(),
            ));
        };
        let (list, whose) = self.releasers(&release);
        if !self.allowed(&user.id, &list).await? {
            let text = format!("🚫 You may not release. Who may: {} ({whose}).", people(&list));
            self.store.audit(self.now_ms(), &user.id, "refused:release", None, None, Some(&text)).await?;
            tracing::info!(user = %user.id, "refused an unauthorized /release");
            return Ok(Reply(text));
        }
        if self.release_services().is_empty() {
            return Ok(Reply("🚫 No service has a [services.<name>.build] table, so /release has nothing to build.".into()));
        }
        let version = args.version.to_string();
        let reference = args.reference.clone().unwrap_or_else(|| release.default_ref.clone());
        if args.dry_run {
            return Ok(Reply(self.release_dry_run(&release, &version, &reference).await));
        }
        // A release of this version whose process died is ended, and said so, before this one starts.
        self.sweep_abandoned_releases().await?;
        let id = match self.store.start_release(&version, &reference, &user.id, &user.name, channel, self.now_ms(), ALIVE_MS).await? {
            Ok(id) => id,
            Err(existing) => {
                let what = if existing.state == "running" { "is being released right now" } else { "was already released" };
                return Ok(Reply(format!(
                    "🚫 {version} {what} (release r{}, by {}, from {}): a version is released once; choose the next one.",
                    existing.id,
                    render::mention(&existing.requested_by),
                    existing.ref_name
                )));
            }
        };
        self.store.audit(self.now_ms(), &user.id, "release", None, None, Some(&format!("r{id}: {version} from {reference}"))).await?;
        let engine = self.clone();
        let (user, channel) = (user.clone(), channel.to_string());
        let (v, r) = (version.clone(), reference.clone());
        tokio::spawn(async move {
            let heartbeat = {
                let engine = engine.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(ALIVE_MS as u64 / 3)).await;
                        if let Err(e) = engine.store.release_alive(id, engine.now_ms() + ALIVE_MS).await {
                            tracing::warn!(release = id, error = format!("{e:#}"), "the release's heartbeat could not be written");
                        }
                    }
                })
            };
            if let Err(e) = engine.run_release(id, &v, &r, &user, &channel, &release).await {
                tracing::error!(release = id, error = format!("{e:#}"), "the release could not be recorded");
            }
            heartbeat.abort();
        });
        Ok(Reply(format!("🏷️ Release r{id}: {version} from {reference} started; its progress is in this channel.")))
    }

    /// Ends each release whose process died mid-way (its heartbeat lapsed) as `failed`, and says so
    /// under its progress message, with the way out. Whichever replica gets there first does it.
    pub async fn sweep_abandoned_releases(&self) -> Result<()> {
        let now = self.now_ms();
        for r in self.store.abandoned_releases(now).await? {
            if !self.store.fail_release(r.id, crate::store::RELEASE_ABANDONED, now).await? {
                continue;
            }
            tracing::warn!(release = r.id, version = %r.version, "a release was abandoned by its process; marked failed");
            let key = format!("release:{}", r.id);
            let shown = match self.store.outbox_message(&key).await? {
                Some(m) => serde_json::from_str::<crate::chat::OutMessage>(&m.body).map(|o| o.text).unwrap_or_default(),
                None => format!("🏷️ Release r{}: {} from {}, by {}", r.id, r.version, r.ref_name, render::mention(&r.requested_by)),
            };
            let text = format!(
                "{shown}\n⚠️ Abandoned: the bot running release r{id} stopped before it ended, and nothing was recorded. An image or the tag may already be in the registry and the repository. `/release {version} --ref {reference}` runs it again: a tag it pushed is reused on the same commit and each image is pushed again.",
                id = r.id,
                version = r.version,
                reference = r.commit_sha.as_deref().unwrap_or(&r.ref_name),
            );
            let draft = Draft { key: &key, channel: &r.channel, thread_key: None, deployment_id: None, alert_id: None, purpose: "release", text: &text };
            self.outbox.send(draft).await?;
            self.store.audit(now, "deploybot", "release-abandoned", None, None, Some(&format!("r{}: {}", r.id, r.version))).await?;
        }
        Ok(())
    }

    /// What `/release --dry-run` says: the commit, the tag, what would be built, the notes.
    async fn release_dry_run(&self, release: &ReleaseConfig, version: &str, reference: &str) -> String {
        let repo = match Repo::sync(&release.repo, &Self::release_dir(release).join("repo.git")).await {
            Ok(r) => r,
            Err(e) => return format!("🚫 Dry run of /release {version}: {e}"),
        };
        let commit = match repo.resolve(reference).await {
            Ok(c) => c,
            Err(e) => return format!("🚫 Dry run of /release {version}: {e}"),
        };
        let tag = match repo.tag_commit(version).await {
            Ok(Some(c)) if c != commit => return format!("🚫 Dry run of /release {version}: {}", tag_elsewhere(version, &c, &commit, reference)),
            Ok(Some(_)) => format!("the tag {version} already points at this commit and would be used as it is"),
            Ok(None) => format!("would create the annotated tag {version} on it and push it"),
            Err(e) => return format!("🚫 Dry run of /release {version}: {e}"),
        };
        let mut out = vec![format!("🔎 Dry run of /release {version}: {reference} is {}; {tag}. Nothing was changed.", short(&commit))];
        for (name, image, build) in self.release_services() {
            let steps = if build.commands.is_empty() {
                "no build steps".to_string()
            } else {
                build.commands.iter().map(|c| format!("`{}`", c.join(" "))).collect::<Vec<_>>().join(", ")
            };
            out.push(format!("• {name}: {steps}; image {image}:{version} from {}/{}", build.context, build.dockerfile));
        }
        match self.release_notes(&repo, version, &commit).await {
            Ok(n) => out.push(format!("\n{n}")),
            Err(e) => out.push(format!("(no release notes: {e})")),
        }
        out.join("\n")
    }

    /// For `/deploy --dry-run`, from the `[release]` repository (nothing when there is none): the
    /// commits between the running version and `version`, and the migration scripts `version`
    /// holds that the database has not run (with `[environments.X.migrations] folder`).
    pub(crate) async fn repository_preview(&self, env: &Environment, running: Option<&str>, version: &str) -> Vec<String> {
        let Some(release) = self.config.release.as_ref() else { return Vec::new() };
        let dir = Self::release_dir(release).join("repo.git");
        let repo = match Repo::sync(&release.repo, &dir).await {
            Ok(r) => r,
            Err(e) => return vec![format!("Changes: unknown ({e})")],
        };
        let to = match repo.tag_commit(version).await {
            Ok(Some(c)) => c,
            _ => return vec![format!("Changes: {version} is not a tag of {}, so the commits and migrations it brings are unknown", crate::secrets::display_url(&release.repo))],
        };
        let mut out = vec![self.changes_between(&repo, running, version, &to).await];
        if let Some(folder) = env.migrations.as_ref().and_then(|m| m.folder.as_deref()) {
            out.push(self.pending_migrations(&repo, env, version, &to, folder).await);
        }
        out
    }

    async fn changes_between(&self, repo: &Repo, running: Option<&str>, version: &str, to: &str) -> String {
        let from = match running {
            Some(r) if r == version => return format!("Changes: none, {version} already runs here"),
            Some(r) => match repo.tag_commit(r).await {
                Ok(Some(c)) => Some((r.to_string(), c)),
                _ => return format!("Changes: the running version {r} is not a tag of the repository, so the commits between are unknown"),
            },
            None => None,
        };
        let commits = match repo.log(from.as_ref().map(|(_, c)| c.as_str()), to, NOTES_COMMITS + 1).await {
            Ok(c) => c,
            Err(e) => return format!("Changes: unknown ({e})"),
        };
        let since = from.as_ref().map_or_else(|| "everything up to it (nothing recorded here)".to_string(), |(r, _)| format!("since {r}"));
        let mut out = format!("Changes in {version} {since}: {} commit{}", commits.len().min(NOTES_COMMITS), if commits.len() == 1 { "" } else { "s" });
        for c in commits.iter().take(NOTES_COMMITS) {
            out.push_str(&format!("\n  • {} ({}, {})", c.subject, short(&c.sha), c.author));
        }
        if commits.len() > NOTES_COMMITS {
            out.push_str("\n  (only the newest are listed)");
        }
        out
    }

    /// The scripts in `folder` at `version` newer than the schema version the environment's last
    /// migration step reported.
    async fn pending_migrations(&self, repo: &Repo, env: &Environment, version: &str, commit: &str, folder: &str) -> String {
        let files = match repo.files_under(commit, folder).await {
            Ok(f) => f,
            Err(e) => return format!("Migrations: unknown ({e})"),
        };
        let scripts = migrations::versioned(&files);
        let Some(newest) = scripts.last() else {
            return format!("Migrations: {version} has no migration scripts in {folder}");
        };
        let holds = format!("{version} holds {} script{} in {folder}, up to {}", scripts.len(), if scripts.len() == 1 { "" } else { "s" }, newest.1);
        let last = match self.store.last_schema_step(env.name.as_str()).await {
            Ok(l) => l,
            Err(e) => return format!("Migrations: unknown, the store could not be read ({e:#})"),
        };
        let (applied, source) = match last {
            None => return format!("Migrations: which are applied is unknown: no migration step in {} has reported the schema's version yet. {holds}.", env.name),
            Some((id, step, _)) if step == "restore" => {
                return format!("Migrations: which are applied is unknown: #{id} restored the database from a backup since the last migration step. {holds}.")
            }
            Some((id, _, detail)) => match migrations::reported_version(&detail) {
                Some(v) => (v, format!("#{id}'s migration step")),
                None => return format!("Migrations: which are applied is unknown: #{id}'s migration step did not say the schema's version. {holds}."),
            },
        };
        let pending = migrations::pending(&files, &applied);
        if pending.is_empty() {
            return format!("Migrations: none to apply (the schema is at {applied}, as {source} reported; {holds})");
        }
        let mut out = format!("Migrations not yet applied: {} (the schema is at {applied}, as {source} reported)", pending.len());
        for (_, name) in pending.iter().take(MIGRATIONS_LISTED) {
            out.push_str(&format!("\n  • {name}"));
        }
        if pending.len() > MIGRATIONS_LISTED {
            out.push_str(&format!("\n  (and {} more)", pending.len() - MIGRATIONS_LISTED));
        }
        out
    }

    async fn release_notes(&self, repo: &Repo, version: &str, commit: &str) -> Result<String, String> {
        let previous = repo.previous_tag(commit, version).await?;
        let commits = repo.log(previous.as_deref(), commit, NOTES_COMMITS + 1).await?;
        let truncated = commits.len() > NOTES_COMMITS;
        Ok(notes::render(version, previous.as_deref(), &commits[..commits.len().min(NOTES_COMMITS)], truncated))
    }

    /// Runs release `id` to its end and records it. Errors are the store's only.
    pub(crate) async fn run_release(&self, id: i64, version: &str, reference: &str, user: &UserRef, channel: &str, release: &ReleaseConfig) -> Result<()> {
        let started = Instant::now();
        let mut progress = Progress {
            engine: self,
            key: format!("release:{id}"),
            channel: channel.to_string(),
            header: format!("🏷️ Release r{id}: {version} from {reference}, by {}", render::mention(&user.id)),
            lines: Vec::new(),
        };
        let mut made = Made::default();
        let outcome = self.release_steps(id, version, reference, user, release, &mut progress, &mut made).await;
        let took = humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()));
        match outcome {
            Ok((images, notes_text)) => {
                self.store.succeed_release(id, &images, &notes_text, self.now_ms()).await?;
                let digests: Vec<String> = images.iter().map(|i| format!("{} → {}", i.image, crate::registry::short_digest(&i.digest))).collect();
                progress.show(&format!("✅ Released {version} in {took}: {}", digests.join(", "))).await;
                let notes_key = format!("release:{id}:notes");
                let draft = Draft { key: &notes_key, channel, thread_key: Some(&progress.key), deployment_id: None, alert_id: None, purpose: "release-notes", text: &notes_text };
                self.outbox.send(draft).await?;
                tracing::info!(release = id, version, "released");
            }
            Err(failure) => {
                // Undo what this release made locally; nothing was pushed after the failure.
                if let Some(tag) = made.tag.take() {
                    let repo = Repo::open(&Self::release_dir(release).join("repo.git"), &release.repo);
                    if let Err(e) = repo.delete_tag(&tag).await {
                        tracing::warn!(release = id, tag, error = e, "the failed release's local tag could not be deleted");
                    }
                }
                if !made.images.is_empty() {
                    if let Ok(engine) = image::Engine::connect(release.docker_host.as_deref(), Duration::from_secs(60)).await {
                        for reference in &made.images {
                            engine.untag(reference).await;
                        }
                    }
                }
                let message = crate::secrets::redact(&failure.message);
                progress.failed(&format!("{}: {message}", failure.step));
                let error = format!("{}: {message}", failure.step);
                self.store.fail_release(id, &error, self.now_ms()).await?;
                progress.show(&format!("❌ Release {version} failed after {took}: nothing was pushed and no image was recorded.")).await;
                tracing::warn!(release = id, version, step = %failure.step, "release failed");
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn release_steps(
        &self,
        id: i64,
        version: &str,
        reference: &str,
        user: &UserRef,
        release: &ReleaseConfig,
        progress: &mut Progress<'_>,
        made: &mut Made,
    ) -> Result<(Vec<ReleaseImage>, String), Failure> {
        let dir = Self::release_dir(release);
        let shown_repo = crate::secrets::display_url(&release.repo);

        progress.start(format!("fetching {shown_repo}")).await;
        let repo = Repo::sync(&release.repo, &dir.join("repo.git")).await.map_err(fail("fetch"))?;
        let commit = repo.resolve(reference).await.map_err(fail("resolve"))?;
        self.store.set_release_commit(id, &commit).await.map_err(|e| Failure { step: "record".into(), message: format!("{e:#}") })?;
        progress.done(format!("{reference} is {}", short(&commit))).await;

        progress.start("checking the Docker Engine and the registry").await;
        let timeout = crate::config::parse_duration(&release.image_timeout).map_err(fail("configuration"))?;
        let engine = image::Engine::connect(release.docker_host.as_deref(), timeout).await.map_err(fail("Docker Engine"))?;
        let services = self.release_services();
        let registry = self.registry();
        for (_, image, _) in &services {
            let reference = ImageRef::parse(image, version);
            // A HEAD of the tag proves the credentials before anything is built.
            registry.manifest(&reference).await.map_err(|e| Failure { step: "registry".into(), message: e.to_string() })?;
        }
        progress.done(format!("Docker Engine at {} answers; the registry accepts the credentials", engine.endpoint())).await;

        progress.start(format!("tagging {version}")).await;
        match repo.tag_commit(version).await.map_err(fail("tag"))? {
            Some(existing) if existing != commit => return Err(Failure { step: "tag".into(), message: tag_elsewhere(version, &existing, &commit, reference) }),
            Some(_) => progress.done(format!("the tag {version} already points at {}", short(&commit))).await,
            None => {
                let email = format!("{}@users.deploybot", user.id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).collect::<String>());
                repo.create_tag(version, &commit, &user.name, &email, &format!("Release {version}\n\nTagged by {} through deploybot /release (r{id}).", user.name))
                    .await
                    .map_err(fail("tag"))?;
                made.tag = Some(version.to_string());
                progress.done(format!("tagged {version} on {} (tagger {})", short(&commit), user.name)).await;
            }
        }
        let notes_text = self.release_notes(&repo, version, &commit).await.map_err(fail("release notes"))?;

        let worktree = repo.worktree(&dir.join(format!("build-r{id}")), &format!("refs/tags/{version}")).await.map_err(fail("checkout"))?;
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut built: Vec<(ServiceName, String, i64)> = Vec::new();
        for (name, image, build) in &services {
            let begun = Instant::now();
            let context = worktree.path.join(&build.context);
            for (i, argv) in build.commands.iter().enumerate() {
                let what = format!("{name}: build step {} of {}: {}", i + 1, build.commands.len(), argv.join(" "));
                progress.start(what.clone()).await;
                self.build_step(argv, build, &context).await.map_err(fail(what.clone()))?;
                progress.done(what).await;
            }
            let reference = format!("{image}:{version}");
            let what = format!("{name}: building {reference}");
            progress.start(what.clone()).await;
            let labels = HashMap::from([
                ("org.opencontainers.image.version".to_string(), version.to_string()),
                ("org.opencontainers.image.revision".to_string(), commit.clone()),
                ("org.opencontainers.image.source".to_string(), shown_repo.clone()),
                ("org.opencontainers.image.created".to_string(), created.clone()),
                ("org.opencontainers.image.title".to_string(), name.to_string()),
            ]);
            let args: HashMap<String, String> = build.args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            engine
                .build(&context, &build.dockerfile, &reference, &labels, &args)
                .await
                .map_err(fail(format!("{name}: image build ({}/{})", build.context, build.dockerfile)))?;
            made.images.push(reference.clone());
            let ms = begun.elapsed().as_millis() as i64;
            progress.done(format!("{name}: built {reference} in {}", humantime::format_duration(Duration::from_millis(ms as u64 / 100 * 100)))).await;
            built.push((name.clone(), reference, ms));
        }
        drop(worktree);

        // Every image built: now push them all, then the tag.
        let mut images = Vec::new();
        for (name, reference, build_ms) in built {
            let what = format!("{name}: pushing {reference}");
            progress.start(what.clone()).await;
            let begun = Instant::now();
            let (repository, _) = reference.rsplit_once(':').unwrap_or((&reference, ""));
            let image_ref = ImageRef::parse(repository, version);
            let credentials = match &self.registry_auth {
                Some(auth) => auth.credentials_for(&image_ref.registry).await.map_err(|e| Failure { step: what.clone(), message: e.to_string() })?,
                None => None,
            };
            engine.push(&reference, credentials.as_ref()).await.map_err(fail(what.clone()))?;
            let manifest = registry.manifest(&image_ref).await.map_err(|e| Failure { step: what.clone(), message: e.to_string() })?;
            let digest = manifest
                .and_then(|m| m.digest)
                .ok_or_else(|| Failure { step: what.clone(), message: format!("the registry does not show {reference} with a digest after the push") })?;
            let push_ms = begun.elapsed().as_millis() as i64;
            progress.done(format!("{name}: pushed {reference} ({})", crate::registry::short_digest(&digest))).await;
            images.push(ReleaseImage { service: name.to_string(), image: reference, digest, build_ms, push_ms });
        }
        if made.tag.is_some() {
            progress.start(format!("pushing the tag {version} to {shown_repo}")).await;
            repo.push_tag(version).await.map_err(fail("tag push"))?;
            made.tag = None;
            progress.done(format!("pushed the tag {version} to {shown_repo}")).await;
        }
        Ok((images, notes_text))
    }

    /// One build step in the context directory, with its `env` table; the output tail on failure.
    async fn build_step(&self, argv: &[String], build: &BuildConfig, context: &Path) -> Result<(), String> {
        let env = crate::secrets::expand_env_table(&build.env, &self.config.vars)?;
        let timeout = crate::config::parse_duration(&build.timeout)?;
        let workdir = context.display().to_string();
        match crate::targets::command::run_argv(argv, Some(&workdir), &env, timeout).await {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.diagnostics() {
                Some(tail) => format!("{e}\n{tail}"),
                None => e.to_string(),
            }),
        }
    }
}

fn tag_elsewhere(version: &str, existing: &str, commit: &str, reference: &str) -> String {
    format!(
        "the tag {version} already exists on {}, not on {} ({reference}): a release tag is never moved; choose another version",
        short(existing),
        short(commit)
    )
}
