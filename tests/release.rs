//! `/release` end to end: real git (a bare repository on disk as the remote), the real Docker
//! Engine building `FROM scratch` images, and Debian's docker-registry with htpasswd basic auth
//! (scripts/services/registry.sh). Then each bad input: a tag that exists elsewhere, an unknown
//! ref, a failing build step, a failing Dockerfile, a registry refusing the credentials, the engine
//! unreachable — each a specific message, nothing pushed, nothing half-recorded.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/services.rs"]
mod services;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use deploybot::app::{self, App};
use deploybot::chat::console;
use deploybot::config::Config;
use deploybot::engine::clock::ShiftedClock;
use deploybot::registry::{ImageRef, Registry, RegistryAuth};
use deploybot::secrets::Vars;
use deploybot::store::Release;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A project with a backend and a frontend, a previous release v0.9.0, and commits after it;
/// pushed to a bare repository, which is what the bot is configured with.
struct Project {
    _dir: tempfile::TempDir,
    work: PathBuf,
    remote: PathBuf,
    root: PathBuf,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        // The build step writes app.txt (the frontend's only when its `env` reached it); the
        // Dockerfile copies it: the image proves the step ran in the checkout it was built from.
        for service in ["backend", "frontend"] {
            write(&work.join(service).join("Dockerfile"), &format!("FROM scratch\nCOPY app.txt /app.txt\nLABEL {}=1\n", docker::TEST_LABEL));
            // Unique per project, so that two tests at once never push the same layer.
            write(&work.join(service).join("src.txt"), &format!("{service} source of {}\n", services::unique("project")));
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "feat(api): first version"]);
        git(&work, &["tag", "-a", "v0.9.0", "-m", "v0.9.0"]);
        write(&work.join("backend/src.txt"), "backend source, fixed\n");
        git(&work, &["commit", "-q", "-am", "fix: rounding of invoice totals"]);
        write(&work.join("frontend/src.txt"), "frontend source, restyled\n");
        git(&work, &["commit", "-q", "-am", "Restyle the frontend"]);
        let remote = root.join("remote.git");
        git(&root, &["clone", "-q", "--bare", work.to_str().unwrap(), remote.to_str().unwrap()]);
        Project { _dir: dir, work, remote, root }
    }

    /// The commit a ref names in the remote, if any.
    fn remote_commit(&self, reference: &str) -> Option<String> {
        let out = Command::new("git").arg("-C").arg(&self.remote).args(["rev-parse", "-q", "--verify", &format!("{reference}^{{commit}}")]).output().unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The authenticated registry: address, user, password.
fn registry() -> Option<(String, String, String)> {
    let addr = services::registry_auth()?;
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: registry.sh sets it with DEPLOYBOT_TEST_REGISTRY_AUTH"));
    Some((addr, var("DEPLOYBOT_TEST_REGISTRY_USER"), var("DEPLOYBOT_TEST_REGISTRY_PASSWORD")))
}

struct Setup<'a> {
    project: &'a Project,
    registry: &'a str,
    repository: String,
    /// Extra build step of the frontend (a failing one), extra `[release]` lines, the password.
    frontend_step: &'a str,
    release_extra: &'a str,
    password: String,
    user: String,
    frontend_dockerfile: &'a str,
}

async fn app(s: &Setup<'_>) -> App {
    let root = s.project.root.display();
    let db = tempfile::NamedTempFile::new_in(&s.project.root).unwrap().into_temp_path().keep().unwrap();
    let config = format!(
        r#"[bot]
database_url = "sqlite://{db}"
[chat.console]
user = "alice"
[release]
repo = "{remote}"
dir = "{root}/release-work-{n}"
releasers = ["alice"]
{release_extra}
[registry]
kind = "basic"
url = "http://{registry}"
username = "${{REG_USER}}"
password = "${{REG_PASSWORD}}"
[services.backend]
image = "{repository}/backend"
order = 1
[services.backend.build]
context = "backend"
commands = [["sh", "-c", "cat src.txt > app.txt"]]
[services.frontend]
image = "{repository}/frontend"
order = 2
[services.frontend.build]
context = "frontend"
dockerfile = "{dockerfile}"
commands = [["sh", "-c", "test \"$BUILD_TOKEN\" = tok-build-1234 && cat src.txt > app.txt"]{frontend_step}]
env = {{ BUILD_TOKEN = "${{BUILD_TOKEN}}" }}
[environments.staging]
channel = "C0STAGING"
target = {{ kind = "command", deploy = ["sh", "-c", "echo {{env}} {{image}}:{{version}}@{{digest}} >> {root}/deployed.txt"] }}
[environments.production]
channel = "C0PROD"
target = {{ kind = "command", deploy = ["sh", "-c", "echo {{env}} {{image}}:{{version}}@{{digest}} >> {root}/deployed.txt"] }}
"#,
        db = db.display(),
        remote = s.project.remote.display(),
        n = services::unique("r"),
        release_extra = s.release_extra,
        registry = s.registry,
        repository = s.repository,
        dockerfile = s.frontend_dockerfile,
        frontend_step = s.frontend_step,
    );
    let mut config = Config::parse(&config).unwrap_or_else(|p| panic!("{p:?}"));
    config.vars = Vars::from_pairs([("REG_USER", s.user.as_str()), ("REG_PASSWORD", s.password.as_str()), ("BUILD_TOKEN", "tok-build-1234")]);
    app::build_console_app(config, Arc::new(ShiftedClock::at(Utc::now())), None).await.unwrap()
}

async fn say(app: &App, seq: u64, user: &str, line: &str) -> String {
    let event = console::parse_line(line, user, "C0RELEASES", seq).unwrap().unwrap();
    app.engine.handle(event).await.unwrap().map(|r| r.0).unwrap_or_default()
}

/// Starts `/release …` and waits (polling the store) for the release to end.
async fn run_release(app: &App, seq: u64, line: &str) -> (Release, String) {
    let reply = say(app, seq, "alice", line).await;
    let id: i64 = reply
        .split_once("Release r")
        .and_then(|(_, rest)| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no release id in the reply: {reply}"));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = app.engine.store.release(id).await.unwrap().expect("the release row");
        if r.state != "running" {
            // The final progress text is written right after the state.
            for _ in 0..100 {
                let text = message(app, &format!("release:{id}")).await;
                if text.contains("Released") || text.contains("failed after") {
                    return (r, text);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return (r, message(app, &format!("release:{id}")).await);
        }
        assert!(Instant::now() < deadline, "release r{id} still running after 300 s: {}", message(app, &format!("release:{id}")).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn message(app: &App, key: &str) -> String {
    let Some(m) = app.engine.store.outbox_message(key).await.unwrap() else { return String::new() };
    serde_json::from_str::<serde_json::Value>(&m.body).unwrap()["text"].as_str().unwrap_or_default().to_string()
}

fn client(registry: &str, user: &str, password: &str) -> Registry {
    let config = toml::from_str(&format!("kind = \"basic\"\nurl = \"http://{registry}\"\nusername = \"{user}\"\npassword = \"${{P}}\"")).unwrap();
    Registry::with_auth(reqwest::Client::new(), Some(Arc::new(RegistryAuth::new(config, Vars::from_pairs([("P", password)])))))
}

async fn digest(registry: &Registry, image: &str, version: &str) -> Option<String> {
    registry.manifest(&ImageRef::parse(image, version)).await.unwrap().map(|m| m.digest.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_tags_builds_pushes_and_records_with_notes_since_the_previous_tag() {
    let Some((addr, user, password)) = registry() else { return };
    let Some(engine) = docker::engine().await else { return };
    let project = Project::new();
    let repository = format!("{addr}/{}", services::unique("deploybot-test"));
    let setup = Setup { project: &project, registry: &addr, repository: repository.clone(), frontend_step: "", release_extra: "", password: password.clone(), user: user.clone(), frontend_dockerfile: "Dockerfile" };
    let app = app(&setup).await;
    let main = project.remote_commit("refs/heads/main").unwrap();

    // Who may: [release] releasers.
    let refused = say(&app, 1, "bob", "/release v1.0.0").await;
    assert_eq!(refused, "🚫 You may not release. Who may: <@alice> ([release] releasers).");
    assert!(app.engine.store.audit_by("bob").await.unwrap().iter().any(|(_, action, _)| action == "refused:release"));

    // The dry run says what would happen and changes nothing.
    let dry = say(&app, 2, "alice", "/release v1.0.0 --dry-run").await;
    assert!(dry.starts_with(&format!("🔎 Dry run of /release v1.0.0: main is {}; would create the annotated tag v1.0.0", &main[..7])), "{dry}");
    assert!(dry.contains("• backend: `sh -c cat src.txt > app.txt`") && dry.contains(&format!("image {repository}/frontend:v1.0.0 from frontend/Dockerfile")), "{dry}");
    assert!(dry.contains("Release notes for v1.0.0 since v0.9.0: 2 commits"), "{dry}");
    assert!(project.remote_commit("refs/tags/v1.0.0").is_none() && app.engine.store.releases(10).await.unwrap().is_empty(), "a dry run changes nothing");

    let (release, progress) = run_release(&app, 3, "/release v1.0.0").await;
    assert_eq!(release.state, "succeeded", "{progress}\n{:?}", release.error);
    assert_eq!(release.commit_sha.as_deref(), Some(main.as_str()));
    assert!(progress.contains("✅ Released v1.0.0 in"), "{progress}");
    assert!(!progress.contains("⏳"), "every step ended: {progress}");

    // The annotated tag, by the requester, on main, in the remote.
    assert_eq!(project.remote_commit("refs/tags/v1.0.0").as_deref(), Some(main.as_str()));
    assert_eq!(git(&project.remote, &["cat-file", "-t", "refs/tags/v1.0.0"]), "tag", "annotated");
    assert!(git(&project.remote, &["for-each-ref", "--format=%(taggername)", "refs/tags/v1.0.0"]).starts_with("alice"), "the requester is the tagger");

    // Both images pushed; the recorded digests are the registry's.
    let images = app.engine.store.release_images(release.id).await.unwrap();
    assert_eq!(images.iter().map(|i| i.service.as_str()).collect::<Vec<_>>(), ["backend", "frontend"]);
    let registry = client(&addr, &user, &password);
    for i in &images {
        let (repo, _) = i.image.rsplit_once(':').unwrap();
        assert_eq!(digest(&registry, repo, "v1.0.0").await.as_deref(), Some(i.digest.as_str()), "{i:?}");
        assert!(i.build_ms > 0 && i.push_ms > 0, "{i:?}");
        assert!(progress.contains(&deploybot::registry::short_digest(&i.digest)), "{progress}");
    }
    assert_eq!(app.engine.store.released_digest("v1.0.0", "backend").await.unwrap().as_deref(), Some(images[0].digest.as_str()));
    // OCI labels on the built image.
    let inspected = engine.inspect_image(&format!("{repository}/backend:v1.0.0")).await.unwrap();
    let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get("org.opencontainers.image.version").map(String::as_str), Some("v1.0.0"));
    assert_eq!(labels.get("org.opencontainers.image.revision").map(String::as_str), Some(main.as_str()));
    assert_eq!(labels.get("org.opencontainers.image.source").map(String::as_str), Some(project.remote.to_str().unwrap()));
    assert!(labels.contains_key("org.opencontainers.image.created"));

    // The notes in the thread: the commits since v0.9.0, grouped.
    let notes = message(&app, &format!("release:{}:notes", release.id)).await;
    assert!(notes.starts_with("Release notes for v1.0.0 since v0.9.0: 2 commits"), "{notes}");
    assert!(notes.contains("\nBug fixes\n• rounding of invoice totals (") && notes.contains("\nOther changes\n• Restyle the frontend ("), "{notes}");
    assert!(!notes.contains("first version"), "v0.9.0's commit is not in v1.0.0's notes: {notes}");
    let thread = app.engine.store.outbox_message(&format!("release:{}:notes", release.id)).await.unwrap().unwrap();
    assert_eq!(thread.thread_key.as_deref(), Some(format!("release:{}", release.id).as_str()));
    assert_eq!(release.notes.as_deref(), Some(notes.as_str()));

    // Deployed by digest: the target is given exactly the released image.
    let accepted = say(&app, 10, "alice", "/deploy v1.0.0 staging").await;
    assert!(accepted.starts_with("👍"), "{accepted}");
    while app.engine.run_next_job().await.unwrap() {}
    let deployed = std::fs::read_to_string(project.root.join("deployed.txt")).unwrap();
    assert_eq!(
        deployed,
        format!("staging {}@{}\nstaging {}@{}\n", images[0].image, images[0].digest, images[1].image, images[1].digest),
        "each service's target got image:version@digest"
    );
    let status = say(&app, 11, "alice", "/status staging").await;
    assert!(status.contains(&format!("backend: v1.0.0 (#1, {})", deploybot::registry::short_digest(&images[0].digest))), "{status}");
    let history = say(&app, 12, "alice", "/history staging").await;
    assert!(
        history.contains(&format!(
            "- **Images:** backend {}, frontend {}",
            deploybot::registry::short_digest(&images[0].digest),
            deploybot::registry::short_digest(&images[1].digest)
        )),
        "{history}"
    );

    // A new release; the dry run of its deployment lists the commits since what runs there.
    write(&project.work.join("backend/src.txt"), "backend source, with exports\n");
    git(&project.work, &["commit", "-q", "-am", "feat: export invoices as CSV"]);
    git(&project.work, &["push", "-q", project.remote.to_str().unwrap(), "main"]);
    let (next, text) = run_release(&app, 14, "/release v1.1.0").await;
    assert_eq!(next.state, "succeeded", "{text}");
    let plan = say(&app, 15, "alice", "/deploy v1.1.0 staging --dry-run").await;
    let head = project.remote_commit("refs/heads/main").unwrap();
    assert!(plan.contains(&format!("Changes in v1.1.0 since v1.0.0: 1 commit\n  • feat: export invoices as CSV ({}, Dev)", &head[..7])), "{plan}");

    // Someone pushes another image over the released tag: the preflight refuses the version.
    let builder = deploybot::release::image::Engine::connect(None, Duration::from_secs(300)).await.unwrap();
    let context = project.root.join("other-image");
    write(&context.join("Dockerfile"), &format!("FROM scratch\nCOPY other.txt /other.txt\nLABEL {}=1\n", docker::TEST_LABEL));
    write(&context.join("other.txt"), "not what was released\n");
    let moved = format!("{repository}/backend:v1.0.0");
    builder.build(&context, "Dockerfile", &moved, &Default::default(), &Default::default()).await.unwrap();
    let credentials = deploybot::registry::Credentials { username: user.clone(), password: deploybot::secrets::Secret::from_value(password.clone()) };
    builder.push(&moved, Some(&credentials)).await.unwrap();
    let now_at = digest(&registry, &format!("{repository}/backend"), "v1.0.0").await.unwrap();
    assert_ne!(now_at, images[0].digest);
    let refused = say(&app, 13, "alice", "/deploy v1.0.0 production").await;
    assert_eq!(
        refused,
        format!(
            "🚫 Tag moved since release: {moved} now points at {}, not at {} as released. Someone pushed over the released image; release a new version instead. Nothing was requested.",
            deploybot::registry::short_digest(&now_at),
            deploybot::registry::short_digest(&images[0].digest)
        )
    );
    assert!(app.engine.store.deployments(Some("production"), &[], 5).await.unwrap().is_empty(), "nothing was requested");

    // A version is released once.
    let again = say(&app, 4, "alice", "/release v1.0.0").await;
    assert!(again.starts_with(&format!("🚫 v1.0.0 was already released (release r{}", release.id)), "{again}");

    for i in &images {
        let _ = engine.remove_image(&i.image, None::<bollard::query_parameters::RemoveImageOptions>, None).await;
    }
    for service in ["backend", "frontend"] {
        let _ = engine.remove_image(&format!("{repository}/{service}:v1.1.0"), None::<bollard::query_parameters::RemoveImageOptions>, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_fails_the_release_with_its_own_message_and_pushes_nothing() {
    let Some((addr, user, password)) = registry() else { return };
    let Some(engine) = docker::engine().await else { return };
    let project = Project::new();
    let repository = format!("{addr}/{}", services::unique("deploybot-test"));
    let registry = client(&addr, &user, &password);
    let base = Setup { project: &project, registry: &addr, repository: repository.clone(), frontend_step: "", release_extra: "", password: password.clone(), user: user.clone(), frontend_dockerfile: "Dockerfile" };
    let nothing_pushed = |version: &'static str| {
        let registry = registry.clone();
        let repository = repository.clone();
        async move {
            for service in ["backend", "frontend"] {
                assert_eq!(digest(&registry, &format!("{repository}/{service}"), version).await, None, "{service}:{version} was pushed");
            }
        }
    };
    let no_images = |app: &App, id: i64| {
        let store = app.engine.store.clone();
        async move { assert!(store.release_images(id).await.unwrap().is_empty(), "a failed release records no image") }
    };

    // A tag that exists on another commit.
    let first = project.remote_commit("refs/tags/v0.9.0").unwrap();
    git(&project.work, &["tag", "-a", "v2.0.0", "-m", "by hand", &first]);
    git(&project.work, &["push", "-q", project.remote.to_str().unwrap(), "refs/tags/v2.0.0"]);
    let app1 = app(&base).await;
    let (r, text) = run_release(&app1, 1, "/release v2.0.0").await;
    let main = project.remote_commit("refs/heads/main").unwrap();
    let expected = format!("tag: the tag v2.0.0 already exists on {}, not on {} (main): a release tag is never moved; choose another version", &first[..7], &main[..7]);
    assert_eq!((r.state.as_str(), r.error.as_deref()), ("failed", Some(expected.as_str())), "{text}");
    assert!(text.contains(&format!("❌ {expected}")) && text.contains("nothing was pushed and no image was recorded"), "{text}");
    assert_eq!(project.remote_commit("refs/tags/v2.0.0").as_deref(), Some(first.as_str()), "the tag did not move");
    nothing_pushed("v2.0.0").await;
    no_images(&app1, r.id).await;

    // An unknown ref.
    let (r, _) = run_release(&app1, 2, "/release v1.1.0 --ref no-such-branch").await;
    assert_eq!(r.error.as_deref(), Some(format!("resolve: unknown ref \"no-such-branch\": no branch, tag or commit of that name in {}", project.remote.display()).as_str()));
    // A failed release may be retried with the same version (a later test does, below).

    // A failing build step: its output tail is in the message; the tag made for it is gone.
    let failing_step = Setup { frontend_step: r#", ["sh", "-c", "echo compiling; echo 'error: missing semicolon' >&2; exit 3"]"#, ..base_clone(&base) };
    let app2 = app(&failing_step).await;
    let (r, text) = run_release(&app2, 1, "/release v1.1.0").await;
    let error = r.error.clone().unwrap_or_default();
    assert!(error.starts_with("frontend: build step 2 of 2: sh -c echo compiling; echo 'error: missing semicolon' >&2; exit 3: command \"sh\" exited with status 3"), "{error}");
    assert!(error.contains("error: missing semicolon"), "the output tail: {error}");
    assert!(text.contains("✅ backend: built") && text.contains("❌ frontend: build step 2 of 2"), "the backend was built, not pushed: {text}");
    assert_eq!(project.remote_commit("refs/tags/v1.1.0"), None, "the tag was not pushed");
    nothing_pushed("v1.1.0").await;
    no_images(&app2, r.id).await;
    assert!(engine.inspect_image(&format!("{repository}/backend:v1.1.0")).await.is_err(), "the built backend image was untagged");

    // A failing Dockerfile (the frontend's COPYs a file no step made).
    let broken = project.work.join("frontend/Broken.Dockerfile");
    write(&broken, "FROM scratch\nCOPY not-there.txt /\n");
    git(&project.work, &["add", "-A"]);
    git(&project.work, &["commit", "-q", "-m", "build: a broken Dockerfile"]);
    git(&project.work, &["push", "-q", project.remote.to_str().unwrap(), "main"]);
    let failing_dockerfile = Setup { frontend_dockerfile: "Broken.Dockerfile", ..base_clone(&base) };
    let app3 = app(&failing_dockerfile).await;
    let (r, text) = run_release(&app3, 1, "/release v1.1.0").await;
    let error = r.error.clone().unwrap_or_default();
    assert!(error.starts_with("frontend: image build (frontend/Broken.Dockerfile): "), "{error}");
    assert!(error.contains("not-there.txt"), "the engine's reason: {error}");
    assert!(text.contains("❌ frontend: image build"), "{text}");
    nothing_pushed("v1.1.0").await;
    no_images(&app3, r.id).await;

    // The registry refuses the credentials: found before anything is built.
    let wrong = Setup { password: "not-the-password".into(), ..base_clone(&base) };
    let app4 = app(&wrong).await;
    let (r, text) = run_release(&app4, 1, "/release v1.1.0").await;
    assert_eq!(r.error.as_deref(), Some(format!("registry: the registry {addr} refused the credentials of {user} (HTTP 401): check [registry] username and password").as_str()));
    assert!(!text.contains("not-the-password") && !text.contains("building"), "{text}");
    nothing_pushed("v1.1.0").await;

    // The engine unreachable.
    let socket = project.root.join("no-engine.sock");
    let extra = format!("docker_host = \"unix://{}\"", socket.display());
    let no_engine = Setup { release_extra: &extra, ..base_clone(&base) };
    let app5 = app(&no_engine).await;
    let (r, _) = run_release(&app5, 1, "/release v1.1.0").await;
    let error = r.error.clone().unwrap_or_default();
    assert!(error.starts_with(&format!("Docker Engine: the Docker Engine is not reachable at unix://{}", socket.display())), "{error}");
    nothing_pushed("v1.1.0").await;

    // Every failure left v1.1.0 free: a good release of it now goes through.
    let app6 = app(&base).await;
    let (r, text) = run_release(&app6, 1, "/release v1.1.0").await;
    assert_eq!(r.state, "succeeded", "{text}");
    assert!(digest(&registry, &format!("{repository}/frontend"), "v1.1.0").await.is_some());
    for service in ["backend", "frontend"] {
        let _ = engine.remove_image(&format!("{repository}/{service}:v1.1.0"), None::<bollard::query_parameters::RemoveImageOptions>, None).await;
    }
}

fn base_clone<'a>(s: &Setup<'a>) -> Setup<'a> {
    Setup {
        project: s.project,
        registry: s.registry,
        repository: s.repository.clone(),
        frontend_step: s.frontend_step,
        release_extra: s.release_extra,
        password: s.password.clone(),
        user: s.user.clone(),
        frontend_dockerfile: s.frontend_dockerfile,
    }
}

/// `/deploy --dry-run` lists the migration scripts the version's tree holds beyond the schema
/// version the environment's last migration step reported (`[environments.X.migrations] folder`).
/// Real git; the migration tool is a stand-in printing what Flyway prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_dry_run_lists_the_migrations_not_yet_applied() {
    let project = Project::new();
    let folder = "backend/src/main/resources/db/migration";
    let migration = |name: &str| project.work.join(folder).join(name);
    write(&migration("V1__init.sql"), "CREATE TABLE invoices (id BIGINT);\n");
    write(&migration("V2__add_tax.sql"), "ALTER TABLE invoices ADD tax NUMERIC;\n");
    git(&project.work, &["add", "-A"]);
    git(&project.work, &["commit", "-q", "-m", "feat(db): invoices with tax"]);
    git(&project.work, &["tag", "-a", "v1.0.0", "-m", "v1.0.0"]);
    write(&migration("V3__index_invoices.sql"), "CREATE INDEX ON invoices (id);\n");
    write(&migration("V10__tenants.sql"), "CREATE TABLE tenants (id BIGINT);\n");
    write(&migration("R__views.sql"), "CREATE OR REPLACE VIEW v AS SELECT 1;\n");
    git(&project.work, &["add", "-A"]);
    git(&project.work, &["commit", "-q", "-m", "feat(db): tenants"]);
    git(&project.work, &["tag", "-a", "v1.1.0", "-m", "v1.1.0"]);
    let remote = project.remote.to_str().unwrap();
    git(&project.work, &["push", "-q", "--follow-tags", remote, "main"]);

    let root = project.root.display();
    let config = format!(
        r#"[bot]
database_url = "sqlite://{root}/deploybot.db"
[chat.console]
user = "alice"
[release]
repo = "{remote}"
dir = "{root}/release-work"
releasers = ["alice"]
[services.backend]
image = "invoiceme/backend"
[environments.staging]
channel = "C0STAGING"
target = {{ kind = "command", deploy = ["sh", "-c", "true"] }}
[environments.staging.migrations]
command = ["sh", "-c", "cat {root}/flyway-output.txt"]
folder = "{folder}"
"#
    );
    let config = Config::parse(&config).unwrap_or_else(|p| panic!("{p:?}"));
    let app = app::build_console_app(config, Arc::new(ShiftedClock::at(Utc::now())), None).await.unwrap();
    let flyway = |text: &str| std::fs::write(project.root.join("flyway-output.txt"), text).unwrap();

    // Nothing has run here yet: the scripts are listed as the tree holds them, the schema unknown.
    let plan = say(&app, 1, "alice", "/deploy v1.0.0 staging --dry-run").await;
    assert!(
        plan.contains(&format!("Migrations: which are applied is unknown: no migration step in staging has reported the schema's version yet. v1.0.0 holds 2 scripts in {folder}, up to V2__add_tax.sql.")),
        "{plan}"
    );

    flyway(
        "Current version of schema \"public\": << Empty Schema >>\n\
         Migrating schema \"public\" to version \"1 - init\"\n\
         Migrating schema \"public\" to version \"2 - add tax\"\n\
         Successfully applied 2 migrations to schema \"public\", now at version v2 (execution time 00:00.031s)\n",
    );
    assert!(say(&app, 2, "alice", "/deploy v1.0.0 staging").await.starts_with("👍"));
    while app.engine.run_next_job().await.unwrap() {}
    let first = app.engine.store.deployments(None, &[], 1).await.unwrap().remove(0);
    assert_eq!(first.state, deploybot::model::DeploymentState::Succeeded, "{:?}", first.error);

    // v1.1.0 brings two versioned scripts beyond 2, in version order (10 after 3); the repeatable
    // script has no place in that order.
    let plan = say(&app, 3, "alice", "/deploy v1.1.0 staging --dry-run").await;
    assert!(
        plan.contains(&format!("Migrations not yet applied: 2 (the schema is at 2, as #{}'s migration step reported)\n  • V3__index_invoices.sql\n  • V10__tenants.sql", first.id)),
        "{plan}"
    );
    assert!(plan.contains("Changes in v1.1.0 since v1.0.0: 1 commit\n  • feat(db): tenants"), "{plan}");
    assert!(!plan.contains("R__views.sql"), "{plan}");
    let same = say(&app, 4, "alice", "/deploy v1.0.0 staging --dry-run").await;
    assert!(same.contains(&format!("Migrations: none to apply (the schema is at 2, as #{}'s migration step reported; v1.0.0 holds 2 scripts", first.id)), "{same}");

    // A migration tool that does not say where the schema is: the plan says it cannot tell.
    flyway("migrations ran\n");
    assert!(say(&app, 5, "alice", "/deploy v1.1.0 staging").await.starts_with("👍"));
    while app.engine.run_next_job().await.unwrap() {}
    let second = app.engine.store.deployments(None, &[], 1).await.unwrap().remove(0);
    assert_eq!(second.state, deploybot::model::DeploymentState::Succeeded, "{:?}", second.error);
    let plan = say(&app, 6, "alice", "/deploy v1.1.0 staging --dry-run").await;
    assert!(plan.contains(&format!("Migrations: which are applied is unknown: #{}'s migration step did not say the schema's version. v1.1.0 holds 4 scripts", second.id)), "{plan}");

    // A version that is not a tag of the repository: neither commits nor migrations are guessed.
    let plan = say(&app, 7, "alice", "/deploy v2.0.0 staging --dry-run").await;
    assert!(plan.contains("Changes: v2.0.0 is not a tag of") && plan.contains("so the commits and migrations it brings are unknown"), "{plan}");
    assert_eq!(app.engine.store.deployments(None, &[], 10).await.unwrap().len(), 2, "dry runs request nothing");
}

#[test]
fn a_migrations_folder_needs_the_release_repository_and_a_relative_path() {
    let base = r#"[bot]
database_url = "sqlite::memory:"
[services.backend]
image = "invoiceme/backend"
[environments.staging]
channel = "C0STAGING"
target = { kind = "command", deploy = ["sh", "-c", "true"] }
[environments.staging.migrations]
command = ["flyway", "migrate"]
"#;
    let problems = |text: &str| Config::parse(text).map(|_| Vec::new()).unwrap_or_else(|p| p.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    let without_release = problems(&format!("{base}folder = \"db/migration\"\n"));
    assert!(without_release.iter().any(|p| p.contains("environments.staging.migrations.folder") && p.contains("there is no [release] section")), "{without_release:?}");
    let escaping = problems(&format!("{base}folder = \"../elsewhere\"\n[release]\nrepo = \"/srv/invoiceme.git\"\n"));
    assert!(escaping.iter().any(|p| p.contains("environments.staging.migrations.folder") && p.contains("must be a folder inside the [release] repository")), "{escaping:?}");
    assert!(problems(&format!("{base}folder = \"db/migration\"\n[release]\nrepo = \"/srv/invoiceme.git\"\n")).is_empty());
}

/// A release whose process died mid-way (what it leaves in the store: `running`, its heartbeat
/// lapsed, a progress message stopped at a step) is ended `failed` by the sweep every replica
/// runs, and its message says so and how to run it again; a live release is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_process_died_is_ended_and_its_message_says_how_to_run_it_again() {
    use deploybot::chat::outbox::Draft;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
[chat.console]
user = "alice"
[release]
repo = "{d}/remote.git"
releasers = ["alice"]
[services.backend]
image = "invoiceme/backend"
[services.backend.build]
context = "backend"
[environments.staging]
channel = "C0STAGING"
target = {{ kind = "command", deploy = ["sh", "-c", "true"] }}
"#,
        d = dir.path().display()
    );
    let app = app::build_console_app(Config::parse(&config).unwrap_or_else(|p| panic!("{p:?}")), Arc::new(ShiftedClock::at(Utc::now())), None).await.unwrap();
    let store = &app.engine.store;
    let now = Utc::now().timestamp_millis();

    // Started two minutes ago by a process that has not beaten since (alive for 60 s).
    let dead = store.start_release("v1.0.0", "main", "alice", "alice", "C0RELEASES", now - 120_000, 60_000).await.unwrap().unwrap();
    store.set_release_commit(dead, "0123456789abcdef0123456789abcdef01234567").await.unwrap();
    let key = format!("release:{dead}");
    let stopped = "🏷️ Release r1: v1.0.0 from main, by <@alice>\n✅ fetched\n⏳ building backend";
    let draft = Draft { key: &key, channel: "C0RELEASES", thread_key: None, deployment_id: None, alert_id: None, purpose: "release", text: stopped };
    app.engine.outbox.send(draft).await.unwrap();
    // Started just now by a live process.
    let live = store.start_release("v1.1.0", "main", "alice", "alice", "C0RELEASES", now, 60_000).await.unwrap().unwrap();

    app.engine.sweep_abandoned_releases().await.unwrap();
    let ended = store.release(dead).await.unwrap().unwrap();
    assert_eq!(ended.state, "failed");
    assert!(ended.error.as_deref().unwrap_or_default().starts_with("abandoned: the process running it stopped"), "{:?}", ended.error);
    assert!(ended.finished_at.is_some());
    let text = message(&app, &key).await;
    assert!(text.starts_with(&format!("{stopped}\n⚠️ Abandoned: the bot running release r{dead} stopped before it ended, and nothing was recorded.")), "{text}");
    assert!(text.contains("`/release v1.0.0 --ref 0123456789abcdef0123456789abcdef01234567` runs it again"), "{text}");
    assert!(store.audit_by("deploybot").await.unwrap().iter().any(|(_, action, detail)| action == "release-abandoned" && detail.as_deref() == Some(&format!("r{dead}: v1.0.0") as &str)));
    assert_eq!(store.release(live).await.unwrap().unwrap().state, "running", "a release whose process beats is left alone");

    // Swept once: a second sweep changes nothing.
    app.engine.sweep_abandoned_releases().await.unwrap();
    assert_eq!(message(&app, &key).await, text);
    assert_eq!(store.audit_by("deploybot").await.unwrap().iter().filter(|(_, action, _)| action == "release-abandoned").count(), 1);
}
