//! A real Docker Engine for the docker target's tests: the static stand-in binary, images built from
//! it in memory (`FROM scratch`, nothing pulled), and a [`Scope`] that owns every container, image and
//! network a test makes and removes them when dropped, also when the test fails.
//!
//! Set `DEPLOYBOT_SKIP_DOCKER=1` to skip these tests where no engine runs; without it a missing
//! engine fails them. `DEPLOYBOT_STANDIN_STATIC` may name a prebuilt static stand-in binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, ListContainersOptions, ListImagesOptions, ListNetworksOptions, RemoveContainerOptions,
    RemoveImageOptions, StartContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt as _;

/// Every object a test makes carries this label; containers and networks also `deploybot.test.pid`
/// with the test's process id, and images have it in their repository (`deploybot-test-<pid>-<case>/…`).
pub const TEST_LABEL: &str = "deploybot.test";
const NAME_PREFIX: &str = "deploybot-test-";
const PID_LABEL: &str = "deploybot.test.pid";
const SCOPE_LABEL: &str = "deploybot.test.scope";

/// The port the stand-in listens on inside its container.
pub const APP_PORT: &str = "8080/tcp";

/// Connects to the local engine; `None` (after saying so) when `DEPLOYBOT_SKIP_DOCKER=1`.
/// Panics with the reason when no engine answers.
pub async fn engine() -> Option<Docker> {
    if std::env::var("DEPLOYBOT_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        eprintln!("skipped: DEPLOYBOT_SKIP_DOCKER=1, so this test does not talk to a Docker Engine");
        return None;
    }
    let docker = Docker::connect_with_defaults()
        .unwrap_or_else(|e| panic!("no Docker Engine to test against ({e}); set DEPLOYBOT_SKIP_DOCKER=1 to skip the docker tests"));
    match docker.negotiate_version().await {
        Ok(docker) => Some(docker),
        Err(e) => panic!("the Docker Engine does not answer ({e}); start it, or set DEPLOYBOT_SKIP_DOCKER=1 to skip the docker tests"),
    }
}

/// The fully static stand-in binary, built once per test process (cargo's own lock serialises
/// concurrent builds of the same target dir), or `DEPLOYBOT_STANDIN_STATIC` when set.
pub fn standin_static() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let path = match std::env::var_os("DEPLOYBOT_STANDIN_STATIC") {
            Some(path) => PathBuf::from(path),
            None => build_standin_static(),
        };
        check_static(&path);
        path
    })
}

fn build_standin_static() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from).join("static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "-p", "deploybot-standin", "--bin", "invoiceme-standin", "--target", "x86_64-unknown-linux-gnu"])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("cannot run cargo to build the static stand-in");
    assert!(output.status.success(), "building the static stand-in failed:\n{}", String::from_utf8_lossy(&output.stderr));
    eprintln!("static stand-in ready in {:.1?}", started.elapsed());
    target_dir.join("x86_64-unknown-linux-gnu/release/invoiceme-standin")
}

/// A `FROM scratch` image has no dynamic loader: the binary must have no `PT_INTERP` program header.
fn check_static(path: &Path) {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read the stand-in binary {}: {e}", path.display()));
    assert!(elf.len() > 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2, "{} is not a 64-bit ELF binary", path.display());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let interp = (0..phnum).any(|i| u32::from_le_bytes(elf[phoff + i * phentsize..][..4].try_into().unwrap()) == 3);
    assert!(!interp, "{} is dynamically linked; build it with RUSTFLAGS=\"-C target-feature=+crt-static\"", path.display());
}

/// A free port on 127.0.0.1 for publishing a container's port (the engine binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port on 127.0.0.1")
}

/// Everything one test makes on the engine; removed on drop.
pub struct Scope {
    pub docker: Docker,
    /// Unique per test: `deploybot-test-<pid>-<case>`; also the Compose project name of its containers.
    pub name: String,
    /// Every image built, also those whose tag moved on since.
    images: Mutex<Vec<String>>,
}

impl Scope {
    /// `None` when the docker tests are skipped. Removes what dead test processes left behind.
    pub async fn new(case: &str) -> Option<Scope> {
        let docker = engine().await?;
        remove_leftovers(&docker).await;
        Some(Scope { docker, name: format!("{NAME_PREFIX}{}-{case}", std::process::id()), images: Mutex::new(Vec::new()) })
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (TEST_LABEL.to_string(), "1".to_string()),
            (PID_LABEL.to_string(), std::process::id().to_string()),
            (SCOPE_LABEL.to_string(), self.name.clone()),
        ])
    }

    /// The image repository of this scope's stand-in.
    pub fn repository(&self) -> String {
        format!("{}/backend", self.name)
    }

    /// Builds `<repository>:<tag>` from the static stand-in reporting `app_version`, with a Docker
    /// health check (the stand-in's `--healthcheck` mode) when `healthcheck` is set. Returns the image id.
    pub async fn build_image(&self, tag: &str, app_version: &str, healthcheck: bool) -> String {
        let reference = format!("{}:{tag}", self.repository());
        let health = if healthcheck {
            "HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD [\"/invoiceme-standin\", \"--healthcheck\", \"http://127.0.0.1:8080/api/actuator/health\"]\n"
        } else {
            ""
        };
        // The classic builder commits a layer per instruction, about a second each on this engine: what
        // varies comes last so that the rest is cached across images. The scope in the last step keeps
        // two tests from sharing an image id, so that one's cleanup never removes the other's image.
        let dockerfile = format!(
            "FROM scratch\nCOPY invoiceme-standin /invoiceme-standin\nLABEL {TEST_LABEL}=1\n\
             ENTRYPOINT [\"/invoiceme-standin\", \"--listen\", \"0.0.0.0:8080\"]\n{health}\
             ENV APP_VERSION={app_version} DEPLOYBOT_TEST_SCOPE={}\n",
            self.name
        );
        let context = build_context(&dockerfile, standin_static());
        let _lock = ImageLock::acquire().await;
        let options = BuildImageOptions { t: Some(reference.clone()), rm: true, forcerm: true, ..Default::default() };
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut log = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(error) = info.error.or(info.error_detail.and_then(|d| d.message)) {
                        panic!("building {reference} failed: {error}\n{log}");
                    }
                    log.push_str(info.stream.as_deref().unwrap_or_default());
                }
                Err(e) => panic!("building {reference} failed: {e}\n{log}"),
            }
        }
        let id = self.docker.inspect_image(&reference).await.unwrap_or_else(|e| panic!("{reference} was not built: {e}\n{log}")).id.unwrap();
        self.images.lock().unwrap_or_else(PoisonError::into_inner).push(id.clone());
        id
    }

    /// A user-defined network, as Compose makes for a project.
    pub async fn network(&self) -> String {
        let name = format!("{}_default", self.name);
        let request = NetworkCreateRequest { name: name.clone(), driver: Some("bridge".into()), labels: Some(self.labels()), ..Default::default() };
        self.docker.create_network(request).await.unwrap_or_else(|e| panic!("cannot create network {name}: {e}"));
        name
    }

    /// What `docker compose up -d` would have made for `service`: container `<scope>-<service>-1`
    /// running `image`, on `network` with the service's alias, port 8080 published on 127.0.0.1:`port`,
    /// with some env, labels and a restart policy that a deploy must keep. Returns its name.
    pub async fn compose_up(&self, service: &str, image: &str, network: &str, port: u16) -> String {
        let name = format!("{}-{service}-1", self.name);
        let mut labels = self.labels();
        labels.insert("com.docker.compose.project".into(), self.name.clone());
        labels.insert("com.docker.compose.service".into(), service.into());
        labels.insert("team".into(), "billing".into());
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            env: Some(vec!["DB_URL=postgres://db:5432/invoiceme".into(), "STANDIN_PASSWORD=compose-pass".into()]),
            exposed_ports: Some(HashMap::from([(APP_PORT.to_string(), HashMap::new())])),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(network.to_string()),
                port_bindings: Some(HashMap::from([(
                    APP_PORT.to_string(),
                    Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(port.to_string()) }]),
                )])),
                restart_policy: Some(RestartPolicy { name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED), maximum_retry_count: None }),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network.to_string(), EndpointSettings { aliases: Some(vec![service.to_string()]), ..Default::default() })])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        self.docker.create_container(Some(options), body).await.unwrap_or_else(|e| panic!("cannot create {name}: {e}"));
        self.docker.start_container(&name, None::<StartContainerOptions>).await.unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        name
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let filter = format!("{SCOPE_LABEL}={}", self.name);
        let images = std::mem::take(&mut *self.images.lock().unwrap_or_else(PoisonError::into_inner));
        let repository = self.repository();
        // Drop may run inside the test's runtime, which cannot block on another: clean up on a thread.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for cleanup");
            runtime.block_on(async {
                remove_labelled(&docker, &filter).await;
                let _lock = ImageLock::acquire().await;
                untag(&docker, |tag| tag.starts_with(&format!("{repository}:"))).await;
                remove_unused(&docker, &images).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// Removes the containers, networks and images of test processes that are gone.
async fn remove_leftovers(docker: &Docker) {
    let dead = |pid: &str| !Path::new(&format!("/proc/{pid}")).exists();
    let test_label = || Some(HashMap::from([("label".to_string(), vec![TEST_LABEL.to_string()])]));
    let containers = docker.list_containers(Some(ListContainersOptions { all: true, filters: test_label(), ..Default::default() })).await.unwrap_or_default();
    let networks = docker.list_networks(Some(ListNetworksOptions { filters: test_label() })).await.unwrap_or_default();
    let mut dead_pids: Vec<String> = containers
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(PID_LABEL).cloned())
        .chain(networks.iter().filter_map(|n| n.labels.as_ref()?.get(PID_LABEL).cloned()))
        .filter(|pid| dead(pid))
        .collect();
    dead_pids.sort();
    dead_pids.dedup();
    for pid in dead_pids {
        eprintln!("removing the containers and networks test process {pid} left behind");
        remove_labelled(docker, &format!("{PID_LABEL}={pid}")).await;
    }
    let _lock = ImageLock::acquire().await;
    untag(docker, |tag| tag.strip_prefix(NAME_PREFIX).and_then(|rest| rest.split('-').next()).is_some_and(dead)).await;
    // Untagged ones are the builder's cache, kept by `noprune` for the next build: remove it once
    // it is an hour old, with the chain of parents nothing else uses.
    let images = docker.list_images(Some(ListImagesOptions { filters: test_label(), ..Default::default() })).await.unwrap_or_default();
    let hour_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64 - 3600);
    let stale = images.iter().filter(|i| i.created < hour_ago && i.repo_tags.iter().all(|t| t == "<none>:<none>"));
    for image in stale {
        let _ = docker.remove_image(&image.id, Some(RemoveImageOptions { force: false, noprune: false }), None).await;
    }
}

/// Removes every container, then network, carrying `label` (`key=value`).
async fn remove_labelled(docker: &Docker, label: &str) {
    let filters = || Some(HashMap::from([("label".to_string(), vec![label.to_string()])]));
    let containers = docker.list_containers(Some(ListContainersOptions { all: true, filters: filters(), ..Default::default() })).await.unwrap_or_default();
    for c in containers {
        if let Some(id) = c.id {
            let _ = docker.remove_container(&id, Some(RemoveContainerOptions { force: true, v: true, link: false })).await;
        }
    }
    let networks = docker.list_networks(Some(ListNetworksOptions { filters: filters() })).await.unwrap_or_default();
    for n in networks {
        if let Some(id) = n.id {
            let _ = docker.remove_network(&id).await;
        }
    }
}

/// Held while building or removing images, across test processes and checkouts: the builder's cache
/// shares intermediate images between tests, and a removal that prunes them must not run while a
/// build in another process is about to reuse them.
struct ImageLock(std::fs::File);

impl ImageLock {
    async fn acquire() -> ImageLock {
        let path = std::env::temp_dir().join("deploybot-docker-test-images.lock");
        tokio::task::spawn_blocking(move || {
            use std::os::fd::AsRawFd as _;
            let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).expect("opening the image lock file");
            // SAFETY: flock on a descriptor we own; the lock goes with the file when it is closed.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            assert_eq!(locked, 0, "locking {}: {}", path.display(), std::io::Error::last_os_error());
            ImageLock(file)
        })
        .await
        .expect("the image lock task")
    }
}

/// What removing a test image does: never forced (an image a container uses stays), and its untagged
/// parents are kept as the builder's cache for the next test (see `remove_leftovers`).
const REMOVE_IMAGE: RemoveImageOptions = RemoveImageOptions { force: false, noprune: true };

/// Removes the test images' tags that `matches` picks; the engine deletes an image with its last tag.
async fn untag(docker: &Docker, matches: impl Fn(&str) -> bool) {
    let filters = Some(HashMap::from([("label".to_string(), vec![TEST_LABEL.to_string()])]));
    let images = docker.list_images(Some(ListImagesOptions { filters, ..Default::default() })).await.unwrap_or_default();
    for tag in images.iter().flat_map(|i| &i.repo_tags).filter(|t| matches(t)) {
        let _ = docker.remove_image(tag, Some(REMOVE_IMAGE), None).await;
    }
}

/// Removes images by id (this scope's own, such as one whose tag moved on).
async fn remove_unused(docker: &Docker, ids: &[String]) {
    for id in ids {
        let _ = docker.remove_image(id, Some(REMOVE_IMAGE), None).await;
    }
}

/// A tar build context: the Dockerfile and the stand-in binary.
fn build_context(dockerfile: &str, binary: &Path) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, data).expect("appending to an in-memory tar");
    };
    add("Dockerfile", 0o644, dockerfile.as_bytes());
    let binary = std::fs::read(binary).unwrap_or_else(|e| panic!("cannot read {}: {e}", binary.display()));
    add("invoiceme-standin", 0o755, &binary);
    tar.into_inner().expect("finishing an in-memory tar")
}

/// `GET http://127.0.0.1:<port>/api/version` until it answers (or 20 s pass); the version it reports.
pub async fn app_version(port: u16) -> Result<String, String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
    let url = format!("http://127.0.0.1:{port}/api/version");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = match client.get(&url).send().await {
            Ok(response) => match response.json::<serde_json::Value>().await {
                Ok(body) => return body["version"].as_str().map(str::to_string).ok_or_else(|| format!("{url} answered {body}")),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("{url} did not answer: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
