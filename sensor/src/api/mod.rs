//! HTTP API and dashboard (axum), over the SQLite store.
//!
//! Read endpoints ([`read`], [`events`], [`metrics`]) are open (bind to loopback by default);
//! control endpoints ([`control`]) need the bearer token kept in the data directory. Handlers
//! validate their parameters into typed values first, so bad input is a 400 with a JSON
//! message ([`error`]); internal failures are logged and answered with a message that leaks
//! nothing. In `sensor run` the state carries a [`LiveApi`]: capture control, the live model
//! and the live loop's metrics.

mod blocklist;
mod control;
mod dashboard;
pub mod error;
mod events;
mod evidence;
mod extract;
mod metrics;
mod read;
mod rules;
pub mod schema;
mod upstream;

use std::{
    future::Future,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{HeaderValue, header},
    routing::get,
};
use rusqlite::Connection;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use self::error::ApiError;
use crate::report::Report;
use crate::{config::Config, drive::live::Control, metrics::Registry, sink::store::open_ro};

/// Shared state of the server.
pub struct ApiState {
    pub db: PathBuf,
    pub data_dir: PathBuf,
    pub token: String,
    pub started: Instant,
    /// The loaded config: the API's replay and training use it as the command line does.
    pub config: Config,
    /// The live sensor (`sensor run`); `None` in `sensor serve`.
    pub live: Option<LiveApi>,
    pub http: HttpLimits,
    /// One replay or training at a time: each holds a flow table and a thread, so a burst
    /// of requests must not multiply them (the others get 409).
    pub jobs: Arc<tokio::sync::Semaphore>,
    /// The config file `[rules]` changes are written to (none: live only).
    pub config_path: Option<PathBuf>,
    /// The rules in force (the config's until the editor applies others).
    pub rules: std::sync::RwLock<crate::detect::RuleConfig>,
    /// Where the rules history is (none: off, no dry runs).
    pub history_dir: Option<PathBuf>,
    /// One apply of changed rules at a time.
    pub applying: tokio::sync::Mutex<()>,
}

/// The slot for a replay or training run from the API.
pub fn job_slot() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(1))
}

/// What `sensor run` adds to the API.
pub struct LiveApi {
    /// Every counter the running sensor's parts declared.
    pub metrics: Registry,
    pub control: Control,
    /// The database writer: whether writes fail and why, for status.
    pub store: Option<Arc<crate::sink::store::WriterStats>>,
}

impl ApiState {
    /// A read-only server over `db` (`sensor serve`) with the default config.
    pub fn read_only(db: PathBuf, data_dir: PathBuf, token: String) -> Self {
        // `sensor serve` dry-runs on the history a `sensor run` with this data directory left.
        let history_dir = Some(data_dir.join("history")).filter(|d| d.is_dir());
        Self {
            db,
            data_dir,
            token,
            started: Instant::now(),
            config: Config::default(),
            live: None,
            http: HttpLimits::default(),
            jobs: job_slot(),
            config_path: None,
            rules: std::sync::RwLock::new(crate::detect::RuleConfig::default()),
            history_dir,
            applying: tokio::sync::Mutex::new(()),
        }
    }

    pub fn with_config(mut self, config: Config) -> Self {
        self.rules = std::sync::RwLock::new(config.rules.clone());
        self.config = config;
        self
    }

    /// The rules in force.
    pub fn rules(&self) -> crate::detect::RuleConfig {
        self.rules
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_rules(&self, rules: crate::detect::RuleConfig) {
        match self.rules.write() {
            Ok(mut r) => *r = rules,
            Err(p) => *p.into_inner() = rules,
        }
    }

    /// The config with the rules in force (the API's replay and training run with them).
    pub fn current_config(&self) -> Config {
        let mut c = self.config.clone();
        c.rules = self.rules();
        c
    }
}

pub type Shared = Arc<ApiState>;

/// Reads the API token from `data_dir/api-token`, creating it (mode 0600) on first start.
/// Returns the token and whether it was just created (so the caller prints it once).
pub fn load_or_create_token(data_dir: &Path) -> std::io::Result<(String, bool)> {
    let path = data_dir.join("api-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if t.len() >= 16 {
            return Ok((t, false));
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let bytes: [u8; 24] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    Ok((token, true))
}

/// The router: API, metrics, events, dashboard, and the API's OpenAPI document (built from
/// the same route list, so nothing is served undescribed).
pub fn router(state: Shared) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(schema::ApiDoc::openapi())
        .routes(routes!(read::status))
        .routes(routes!(read::stats))
        .routes(routes!(read::alerts))
        .routes(routes!(read::alert))
        .routes(routes!(read::anomalies))
        .routes(routes!(read::flows))
        .routes(routes!(read::top_talkers))
        .routes(routes!(read::suspicious_ips))
        .routes(routes!(read::origins))
        .routes(routes!(events::events))
        .routes(routes!(metrics::metrics))
        .merge(control_routes(&state))
        .split_for_parts();
    let doc: Arc<str> = doc.to_pretty_json().unwrap_or_default().into();
    api.route("/", get(dashboard::html))
        .route("/app.js", get(dashboard::js))
        .route("/style.css", get(dashboard::css))
        .route("/vendor/chart.umd.min.js", get(dashboard::chart_js))
        .route(
            "/api/openapi.json",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    doc.to_string(),
                )
            }),
        )
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024))
        // The dashboard loads only its own files: scripts and styles from this origin and
        // nothing inline (the page has none, so markup in a value could not run even if it
        // were rendered as HTML, which it is not), no framing, no referrer, no content-type
        // sniffing. No CORS header is ever sent: other origins cannot read the API.
        .layer(header_layer(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .with_state(state)
}

/// The routes that act or hand out packets: the bearer token is checked once, by a layer,
/// before any of their handlers (or their bodies) runs.
fn control_routes(state: &Shared) -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(evidence::pcap))
        .routes(routes!(control::interfaces))
        .routes(routes!(control::capture_start))
        .routes(routes!(control::capture_stop))
        .routes(routes!(control::replay))
        .routes(routes!(control::train))
        .routes(routes!(blocklist::list, blocklist::add, blocklist::remove))
        .routes(routes!(upstream::list, upstream::withdraw))
        .routes(routes!(rules::get_rules, rules::apply))
        .routes(routes!(rules::dry_run))
        .routes(routes!(rules::changes))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(state),
            require_token,
        ))
}

async fn require_token(
    axum::extract::State(st): axum::extract::State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    control::authorize(&st, req.headers())?;
    Ok(next.run(req).await)
}

fn header_layer(
    name: header::HeaderName,
    value: &'static str,
) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// The dashboard's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// Connection limits of the server (slow and idle clients, too many clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A client has this long to send a request's headers, the first and every next one on a
    /// kept-alive connection; then the connection is closed (slowloris, idle sockets).
    pub header_timeout: Duration,
    /// Connections open at once at most; beyond it a new connection is closed at once (the
    /// event streams of open dashboards count).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// Connections closed at accept because `max_connections` were open.
pub static REFUSED_CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Serves until `shutdown` completes, then lets in-flight requests finish (5 s at most; event
/// streams are told to end). Hand-rolled accept loop rather than `axum::serve`, for the header
/// timeout and the connection cap, which it does not offer.
pub async fn serve(
    listener: TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.http;
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 only: the dashboard and every client of this API speak it, and hyper's header
    // timeout then covers a connection from its first byte on (version sniffing for HTTP/2
    // would wait for that byte without one).
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %Report(&e), "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            REFUSED_CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(stream);
            continue;
        };
        // The client's address, for the audit of rule changes.
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(rules::Peer(peer))),
        );
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ignored = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    Ok(())
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Longest an API read may run (see `read`).
pub const READ_LIMIT: Duration = Duration::from_secs(5);

/// Runs a read against the database off the async threads.
async fn read<T: Send + 'static>(
    st: &Shared,
    f: impl FnOnce(&Connection) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let db = st.db.clone();
    tokio::task::spawn_blocking(move || {
        if !db.exists() {
            return Err(ApiError::NotFound(
                "no database yet: replay a capture or start a capture first".into(),
            ));
        }
        let c = open_ro(&db)?;
        // A read holds its snapshot, and the writer cannot truncate the WAL past it: no read
        // from the API runs longer than READ_LIMIT (503 instead).
        let started = Instant::now();
        c.progress_handler(10_000, Some(move || started.elapsed() > READ_LIMIT));
        f(&c)
    })
    .await
    .map_err(|e| ApiError::Internal(Report(&e).to_string()))?
}
