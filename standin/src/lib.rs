//! A stand-in for the InvoiceMe application, for demos and tests: every health check, smoke test and
//! monitoring rule of deploybot runs against it over real HTTP.
//!
//! Layout:
//! - `lib.rs`: [`StandinConfig`], the [`Behaviour`] a version string selects, the shared [`StandinState`],
//!   [`router`], [`serve`] (listener and shutdown signal as arguments) and [`spawn`] for tests on port 0.
//! - `app.rs`: the endpoints with Spring Boot's shapes (actuator health, auth, customers, frontend, version)
//!   and the `/__standin/*` controls that tests use to change behaviour at run time.
//! - `metrics.rs`: Prometheus text in Micrometer's names, fed by a middleware that counts every request.
//! - `text.rs`: RFC 3339, base64url and id encoders, written by hand to keep the static binary small.
//!
//! *Invariant*: the library never prints unless [`StandinConfig::log_requests`] is set (the binary sets it),
//! and never exits the process; `-crash` is carried out by the binary.

mod app;
mod metrics;
mod text;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use app::Customer;

/// The password the runbook's smoke test logs in with; always accepted for [`SMOKE_USERNAME`].
pub const SMOKE_PASSWORD: &str = "testpass";
/// The only user the stand-in knows.
pub const SMOKE_USERNAME: &str = "test@example.com";
/// The one origin whose CORS preflights are allowed (the frontend's).
pub const ALLOWED_ORIGIN: &str = "https://invoiceme.com";
/// Failed logins per [`LOGIN_WINDOW`] after which further failing attempts get 429.
pub const LOGIN_FAILURES_ALLOWED: usize = 10;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Lifetime of an issued token, in seconds (`expiresIn`).
pub const TOKEN_TTL_SECS: u64 = 3600;
/// Delay per response of a `-slow` version unless `STANDIN_SLOW_MS` says otherwise.
pub const DEFAULT_SLOW: Duration = Duration::from_millis(1500);
/// Fraction of failing responses of an `-errors` version unless `STANDIN_ERROR_RATE` says otherwise.
pub const DEFAULT_ERROR_RATE: f64 = 0.2;

/// How one stand-in process behaves. Build it with [`StandinConfig::new`] (no environment read) or
/// [`StandinConfig::from_env`] (the binary's env fallbacks).
#[derive(Debug, Clone, PartialEq)]
pub struct StandinConfig {
    /// The version the app reports; its suffixes select misbehaviour (see [`Behaviour`]).
    pub version: String,
    /// A password accepted in addition to [`SMOKE_PASSWORD`] (`STANDIN_PASSWORD`).
    pub extra_password: Option<String>,
    /// Delay added to every response of a `-slow` version (`STANDIN_SLOW_MS`).
    pub slow: Duration,
    /// Fraction of `/api/customers` and `/` responses that fail with 500 in an `-errors` version
    /// (`STANDIN_ERROR_RATE`).
    pub error_rate: f64,
    /// Print one access-log line per request to stdout, and Spring-like error lines to stderr.
    pub log_requests: bool,
}

impl StandinConfig {
    /// Defaults for `version`, reading nothing from the environment.
    pub fn new(version: impl Into<String>) -> Self {
        Self {
            version: version.into(),
            extra_password: None,
            slow: DEFAULT_SLOW,
            error_rate: DEFAULT_ERROR_RATE,
            log_requests: false,
        }
    }

    /// Defaults overridden by `STANDIN_PASSWORD`, `STANDIN_SLOW_MS` and `STANDIN_ERROR_RATE`.
    /// An unparsable value is an error naming the variable.
    pub fn from_env(version: impl Into<String>) -> Result<Self, String> {
        let mut config = Self::new(version);
        config.extra_password = std::env::var("STANDIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        if let Ok(ms) = std::env::var("STANDIN_SLOW_MS") {
            let ms: u64 = ms.trim().parse().map_err(|_| {
                format!("STANDIN_SLOW_MS must be a number of milliseconds, got {ms:?}")
            })?;
            config.slow = Duration::from_millis(ms);
        }
        if let Ok(rate) = std::env::var("STANDIN_ERROR_RATE") {
            config.error_rate = parse_rate(&rate).ok_or_else(|| {
                format!("STANDIN_ERROR_RATE must be a number from 0 to 1, got {rate:?}")
            })?;
        }
        Ok(config)
    }

    pub fn behaviour(&self) -> Behaviour {
        Behaviour::from_version(&self.version)
    }
}

fn parse_rate(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|rate| (0.0..=1.0).contains(rate))
}

/// Misbehaviour selected by suffixes of the version string, so that deploying a "bad build" is a real failure.
/// Suffixes combine (`v1.2.0-slow-errors`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// `-broken`: health and health/db answer 503 DOWN; login and customers fail with 500 (no database).
    pub broken: bool,
    /// `-slow`: every response is delayed by [`StandinConfig::slow`].
    pub slow: bool,
    /// `-errors`: a deterministic fraction of `/api/customers` and `/` responses are 500.
    pub errors: bool,
    /// `-html`: health endpoints answer 200 with an HTML page instead of JSON.
    pub html: bool,
    /// `-crash`: the binary logs a fatal error and exits with code 3 right after start.
    pub crash: bool,
    /// `-hog`: CPU usage 0.95 and heap at 90% of its maximum.
    pub hog: bool,
    /// `-dbpool`: 9 of the 10 pool connections reported active, 3 threads pending.
    pub dbpool: bool,
    /// `-insecure`: a security regression: no security headers, CORS open to any origin, the
    /// customer list readable without a token, failed logins never throttled, and the plain-HTTP
    /// front door (`/http/…`) serving the page instead of redirecting to HTTPS.
    pub insecure: bool,
}

impl Behaviour {
    pub fn from_version(version: &str) -> Self {
        let has = |suffix: &str| version.contains(suffix);
        Self {
            broken: has("-broken"),
            slow: has("-slow"),
            errors: has("-errors"),
            html: has("-html"),
            crash: has("-crash"),
            hog: has("-hog"),
            dbpool: has("-dbpool"),
            insecure: has("-insecure"),
        }
    }

    /// The active misbehaviours by name, for the start-up log line.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.broken, "broken"),
            (self.slow, "slow"),
            (self.errors, "errors"),
            (self.html, "html"),
            (self.crash, "crash"),
            (self.hog, "hog"),
            (self.dbpool, "dbpool"),
            (self.insecure, "insecure"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Shared state of one running stand-in: cheap to clone, and the handle tests use to change behaviour
/// without going through `/__standin/*`.
#[derive(Clone)]
pub struct StandinState {
    inner: Arc<Inner>,
}

struct Inner {
    config: StandinConfig,
    behaviour: Behaviour,
    healthy: AtomicBool,
    errors: Mutex<ErrorInjector>,
    tokens: Mutex<HashMap<String, Instant>>,
    customers: Mutex<Vec<Customer>>,
    metrics: metrics::RequestMetrics,
    /// Requests currently holding a (pretend) pool connection.
    db_in_flight: AtomicU64,
    ids: AtomicU64,
    hasher: RandomState,
    started: Instant,
    /// When recent failed logins happened, for the login rate limit.
    failed_logins: Mutex<std::collections::VecDeque<Instant>>,
    started_unix: f64,
    ready_after: OnceLock<Duration>,
}

/// Fails every request whose share of the accumulated rate crosses a whole number: with rate 0.2 the 5th,
/// 10th, 15th... eligible requests fail. Deterministic, so tests and demos are repeatable.
#[derive(Debug)]
struct ErrorInjector {
    rate: f64,
    accumulated: f64,
}

impl ErrorInjector {
    fn next_fails(&mut self) -> bool {
        self.accumulated += self.rate;
        if self.accumulated >= 1.0 - 1e-9 {
            self.accumulated -= 1.0;
            true
        } else {
            false
        }
    }
}

impl StandinState {
    pub fn new(config: StandinConfig) -> Self {
        let behaviour = config.behaviour();
        let error_rate = if behaviour.errors {
            config.error_rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            inner: Arc::new(Inner {
                behaviour,
                healthy: AtomicBool::new(!behaviour.broken),
                errors: Mutex::new(ErrorInjector {
                    rate: error_rate,
                    accumulated: 0.0,
                }),
                tokens: Mutex::new(HashMap::new()),
                customers: Mutex::new(Vec::new()),
                metrics: metrics::RequestMetrics::default(),
                db_in_flight: AtomicU64::new(0),
                ids: AtomicU64::new(0),
                hasher: RandomState::new(),
                started: Instant::now(),
                failed_logins: Mutex::new(std::collections::VecDeque::new()),
                started_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
                ready_after: OnceLock::new(),
                config,
            }),
        }
    }

    /// Failed logins allowed per [`LOGIN_WINDOW`] before `/api/auth/login` answers 429.
    pub(crate) fn login_throttled(&self, now: Instant) -> bool {
        let mut failed = lock(&self.inner.failed_logins);
        while failed.front().is_some_and(|t| now.duration_since(*t) > LOGIN_WINDOW) {
            failed.pop_front();
        }
        failed.len() >= LOGIN_FAILURES_ALLOWED
    }

    pub(crate) fn record_failed_login(&self, now: Instant) {
        lock(&self.inner.failed_logins).push_back(now);
    }

    pub fn config(&self) -> &StandinConfig {
        &self.inner.config
    }

    pub fn version(&self) -> &str {
        &self.inner.config.version
    }

    pub fn behaviour(&self) -> Behaviour {
        self.inner.behaviour
    }

    /// Whether health and the database report UP (starts false for `-broken`).
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, up: bool) {
        self.inner.healthy.store(up, Ordering::SeqCst);
    }

    /// The current fraction of failing `/api/customers` and `/` responses (0 unless `-errors` or overridden).
    pub fn error_rate(&self) -> f64 {
        lock(&self.inner.errors).rate
    }

    /// Sets the failing fraction, clamped to `0..=1`, whatever the version says.
    pub fn set_error_rate(&self, rate: f64) {
        let mut errors = lock(&self.inner.errors);
        errors.rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        errors.accumulated = 0.0;
    }

    /// The customers created so far.
    pub fn customers(&self) -> Vec<Customer> {
        lock(&self.inner.customers).clone()
    }

    fn mark_ready(&self) {
        let _ = self.inner.ready_after.set(self.inner.started.elapsed());
    }
}

/// Locks a std mutex, ignoring poisoning: every critical section here leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// All routes of the stand-in: the app's, counted and (for `-slow`) delayed, and the uncounted controls.
pub fn router(state: StandinState) -> axum::Router {
    app::router(state)
}

/// Serves `config` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: StandinConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_state(listener, StandinState::new(config), shutdown).await
}

/// Like [`serve`], with a state the caller keeps a handle to.
pub async fn serve_state(
    listener: TcpListener,
    state: StandinState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.mark_ready();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A stand-in serving on a loopback port in a background task; stops when dropped.
pub struct Spawned {
    pub addr: SocketAddr,
    pub state: StandinState,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Spawned {
    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Binds `127.0.0.1:0` and serves `config` in a task of the current runtime.
pub async fn spawn(config: StandinConfig) -> std::io::Result<Spawned> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = StandinState::new(config);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let served = state.clone();
    tokio::spawn(async move {
        let _ = serve_state(listener, served, async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(Spawned {
        addr,
        state,
        shutdown: Some(shutdown),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_select_and_combine_misbehaviour() {
        assert_eq!(Behaviour::from_version("v1.0.0"), Behaviour::default());
        let b = Behaviour::from_version("v1.2.0-slow-errors");
        assert!(b.slow && b.errors && !b.broken);
        assert_eq!(b.names(), ["slow", "errors"]);
        assert!(Behaviour::from_version("v2.0.0-rc.1-broken").broken);
    }

    #[test]
    fn the_error_injector_fails_a_deterministic_fraction() {
        let mut injector = ErrorInjector {
            rate: 0.2,
            accumulated: 0.0,
        };
        let fails: Vec<bool> = (0..10).map(|_| injector.next_fails()).collect();
        assert_eq!(
            fails,
            [false, false, false, false, true, false, false, false, false, true]
        );
        let mut never = ErrorInjector {
            rate: 0.0,
            accumulated: 0.0,
        };
        assert!((0..100).all(|_| !never.next_fails()));
        let mut always = ErrorInjector {
            rate: 1.0,
            accumulated: 0.0,
        };
        assert!((0..100).all(|_| always.next_fails()));
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        assert_eq!(parse_rate("0.5"), Some(0.5));
        assert_eq!(parse_rate("1.5"), None);
        assert_eq!(parse_rate("lots"), None);
    }
}
