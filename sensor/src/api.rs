//! HTTP API and dashboard (axum), over the SQLite store.
//!
//! Read endpoints are open (bind to loopback by default); control endpoints need the bearer
//! token kept in the data directory. Every handler validates its parameters into typed values
//! first, so bad input is a 400 with a JSON message, and internal failures are logged and
//! answered with a short message that leaks nothing.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use rusqlite::{Connection, ToSql, params_from_iter};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{
    detect::features::{FlowNumbers, N_FEATURES, SourceContext, number_features},
    store::open_ro,
};

/// What goes wrong in a request, and what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Internal(cause) => {
                tracing::error!(%cause, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Shared state of the server.
pub struct ApiState {
    pub db: PathBuf,
    pub data_dir: PathBuf,
    pub token: String,
    pub started: Instant,
    /// Capture state text for `/api/status` (e.g. "replay", "live on eth1", "idle").
    pub capture: std::sync::RwLock<String>,
    /// Live agent numbers (`sensor run`); `None` in `sensor serve`.
    pub live: Option<Arc<crate::agent::LiveMetrics>>,
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

/// The router: API, metrics, events, dashboard.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard_html))
        .route("/app.js", get(dashboard_js))
        .route("/style.css", get(dashboard_css))
        .route("/vendor/chart.umd.min.js", get(chart_js))
        .route("/api/status", get(status))
        .route("/api/stats", get(stats))
        .route("/api/alerts", get(alerts))
        .route("/api/anomalies", get(anomalies))
        .route("/api/flows", get(flows))
        .route("/api/top-talkers", get(top_talkers))
        .route("/api/suspicious-ips", get(suspicious_ips))
        .route("/api/events", get(events))
        .route("/api/interfaces", get(interfaces))
        .route("/api/capture/start", post(capture_start))
        .route("/api/capture/stop", post(capture_stop))
        .route("/api/replay", post(replay))
        .route("/api/model/train", post(train))
        .route("/metrics", get(metrics))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024))
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn dashboard_html() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../../web/index.html"),
    )
}
async fn dashboard_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/app.js"),
    )
}
async fn dashboard_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../web/style.css"),
    )
}
async fn chart_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/vendor/chart.umd.min.js"),
    )
}

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
        let c = open_ro(&db).map_err(|e| ApiError::Internal(e.to_string()))?;
        f(&c)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Query parameters shared by the list endpoints, as received.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    since: Option<String>,
    until: Option<String>,
    kind: Option<String>,
    severity: Option<String>,
    ip: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Validated list parameters.
#[derive(Debug)]
struct Filter {
    since: Option<i64>,
    until: Option<i64>,
    kind: Option<String>,
    severity: Option<String>,
    ip: Option<String>,
    limit: i64,
    cursor: Option<i64>,
}

/// RFC 3339 or Unix seconds, to ns.
fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && (0.0..4.0e9).contains(&secs)
    {
        return Ok((secs * 1e9) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .ok_or_else(|| ApiError::BadRequest(format!("{name} must be RFC 3339 or Unix seconds")))
}

impl ListQuery {
    fn validate(self, kinds: &[&str]) -> Result<Filter, ApiError> {
        let limit = match self.limit.as_deref() {
            None => 100,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(ApiError::BadRequest(
                        "limit must be an integer from 1 to 1000".into(),
                    ));
                }
            },
        };
        let cursor =
            match self.cursor.as_deref() {
                None => None,
                Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::BadRequest("cursor must be a positive integer".into())
                })?),
            };
        if let Some(k) = &self.kind
            && !kinds.contains(&k.as_str())
        {
            return Err(ApiError::BadRequest(format!(
                "kind must be one of {kinds:?}"
            )));
        }
        if let Some(s) = &self.severity
            && !["low", "medium", "high", "critical"].contains(&s.as_str())
        {
            return Err(ApiError::BadRequest(
                "severity must be low, medium, high or critical".into(),
            ));
        }
        if let Some(ip) = &self.ip
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            return Err(ApiError::BadRequest(
                "ip must be an IPv4 or IPv6 address".into(),
            ));
        }
        Ok(Filter {
            since: self
                .since
                .as_deref()
                .map(|v| parse_time("since", v))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|v| parse_time("until", v))
                .transpose()?,
            kind: self.kind,
            severity: self.severity,
            ip: self.ip,
            limit,
            cursor,
        })
    }
}

const ALERT_KINDS: &[&str] = &[
    "port_scan",
    "host_sweep",
    "syn_flood",
    "udp_flood",
    "icmp_flood",
    "traffic_spike",
    "ddos",
    "ml_anomaly",
];

/// Builds `SELECT id, record FROM table WHERE ... ORDER BY id DESC LIMIT n+1`.
fn list(
    c: &Connection,
    table: &str,
    time_col: &str,
    f: &Filter,
    with_kind: bool,
) -> Result<Value, ApiError> {
    let mut sql = format!("SELECT id, record FROM {table} WHERE 1=1");
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(v) = f.since {
        sql.push_str(&format!(" AND {time_col} >= ?"));
        args.push(Box::new(v));
    }
    if let Some(v) = f.until {
        sql.push_str(&format!(" AND {time_col} <= ?"));
        args.push(Box::new(v));
    }
    if with_kind && let Some(k) = &f.kind {
        sql.push_str(" AND kind = ?");
        args.push(Box::new(k.clone()));
    }
    if let Some(s) = &f.severity {
        sql.push_str(" AND severity = ?");
        args.push(Box::new(s.clone()));
    }
    if let Some(ip) = &f.ip {
        sql.push_str(" AND (src_ip = ? OR dst_ip = ?)");
        args.push(Box::new(ip.clone()));
        args.push(Box::new(ip.clone()));
    }
    if let Some(cur) = f.cursor {
        sql.push_str(" AND id < ?");
        args.push(Box::new(cur));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Box::new(f.limit + 1));
    let mut stmt = c.prepare(&sql)?;
    let mut rows: Vec<(i64, String)> = stmt
        .query_map(params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let more = rows.len() as i64 > f.limit;
    rows.truncate(f.limit as usize);
    let next = if more {
        rows.last().map(|(id, _)| *id)
    } else {
        None
    };
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, rec)| {
            let mut v: Value = serde_json::from_str(&rec).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("id".into(), json!(id));
            }
            v
        })
        .collect();
    Ok(json!({ "items": items, "next_cursor": next }))
}

async fn alerts(
    State(st): State<Shared>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = query(q)?.validate(ALERT_KINDS)?;
    Ok(Json(
        read(&st, move |c| list(c, "alerts", "last_seen", &f, true)).await?,
    ))
}

async fn anomalies(
    State(st): State<Shared>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = query(q)?.validate(&[])?;
    if f.kind.is_some() {
        return Err(ApiError::BadRequest("anomalies have no kind filter".into()));
    }
    Ok(Json(
        read(&st, move |c| list(c, "anomalies", "ts", &f, false)).await?,
    ))
}

async fn flows(
    State(st): State<Shared>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = query(q)?.validate(&[])?;
    if f.kind.is_some() || f.severity.is_some() {
        return Err(ApiError::BadRequest(
            "flows have no kind or severity filter".into(),
        ));
    }
    Ok(Json(
        read(&st, move |c| list(c, "flows", "last_seen", &f, false)).await?,
    ))
}

fn query(
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ListQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

fn range(f: &Filter, col: &str) -> (String, Vec<i64>) {
    let mut sql = String::new();
    let mut args = Vec::new();
    if let Some(v) = f.since {
        sql.push_str(&format!(" AND {col} >= ?"));
        args.push(v);
    }
    if let Some(v) = f.until {
        sql.push_str(&format!(" AND {col} <= ?"));
        args.push(v);
    }
    (sql, args)
}

async fn top_talkers(
    State(st): State<Shared>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = query(q)?.validate(&[])?;
    Ok(Json(
        read(&st, move |c| {
            let (cond, args) = range(&f, "last_seen");
            let sql = format!(
                "SELECT src_ip, sum(bytes), sum(packets), count(*) FROM flows WHERE 1=1{cond}
                 GROUP BY src_ip ORDER BY sum(bytes) DESC LIMIT ?"
            );
            let mut stmt = c.prepare(&sql)?;
            let mut p: Vec<i64> = args;
            p.push(f.limit);
            let items: Vec<Value> = stmt
                .query_map(params_from_iter(p), |r| {
                    Ok(json!({"ip": r.get::<_, String>(0)?, "bytes": r.get::<_, i64>(1)?, "packets": r.get::<_, i64>(2)?, "flows": r.get::<_, i64>(3)?}))
                })?
                .collect::<Result<_, _>>()?;
            Ok(json!({ "items": items }))
        })
        .await?,
    ))
}

async fn suspicious_ips(
    State(st): State<Shared>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = query(q)?.validate(&[])?;
    Ok(Json(
        read(&st, move |c| {
            let (cond, args) = range(&f, "last_seen");
            // Sources of attack alerts, worst first.
            let sql = format!(
                "SELECT src_ip, count(*), group_concat(DISTINCT kind),
                        max(CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END),
                        max(last_seen)
                 FROM alerts WHERE src_ip IS NOT NULL AND kind != 'traffic_spike'{cond}
                 GROUP BY src_ip ORDER BY 4 DESC, 2 DESC LIMIT ?"
            );
            let mut p: Vec<i64> = args;
            p.push(f.limit);
            let mut stmt = c.prepare(&sql)?;
            let names = ["normal", "low", "medium", "high", "critical"];
            let items: Vec<Value> = stmt
                .query_map(params_from_iter(p), |r| {
                    let sev: i64 = r.get(3)?;
                    Ok(json!({
                        "ip": r.get::<_, String>(0)?,
                        "alerts": r.get::<_, i64>(1)?,
                        "kinds": r.get::<_, String>(2)?.split(',').collect::<Vec<_>>(),
                        "max_severity": names[sev.clamp(0, 4) as usize],
                        "last_seen": crate::record::rfc3339_us(r.get::<_, i64>(4)?.max(0) as u64),
                    }))
                })?
                .collect::<Result<_, _>>()?;
            Ok(json!({ "items": items }))
        })
        .await?,
    ))
}

/// Totals, per-protocol counts, alert counts by kind, and a time series for charts.
fn stats_json(c: &Connection, f: &Filter) -> Result<Value, ApiError> {
    let (cond, args) = range(f, "ts");
    let (packets, bytes, tcp, udp, icmp, other): (i64, i64, i64, i64, i64, i64) = c.query_row(
        &format!("SELECT coalesce(sum(packets),0), coalesce(sum(bytes),0), coalesce(sum(tcp),0), coalesce(sum(udp),0), coalesce(sum(icmp),0), coalesce(sum(other),0) FROM statistics WHERE 1=1{cond}"),
        params_from_iter(args.clone()),
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
    )?;
    let (fcond, fargs) = range(f, "last_seen");
    let flows: i64 = c.query_row(
        &format!("SELECT count(*) FROM flows WHERE 1=1{fcond}"),
        params_from_iter(fargs.clone()),
        |r| r.get(0),
    )?;
    let anomalies: i64 = c.query_row(
        &format!(
            "SELECT count(*) FROM anomalies WHERE 1=1{}",
            range(f, "ts").0
        ),
        params_from_iter(args.clone()),
        |r| r.get(0),
    )?;
    let mut by_kind = serde_json::Map::new();
    let mut stmt = c.prepare(&format!(
        "SELECT kind, count(*) FROM alerts WHERE 1=1{fcond} GROUP BY kind"
    ))?;
    for row in stmt.query_map(params_from_iter(fargs.clone()), |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (k, n) = row?;
        by_kind.insert(k, json!(n));
    }
    let alerts: i64 = by_kind.values().filter_map(Value::as_i64).sum();
    // Time series: at most `limit` points, bucketed evenly over the range present.
    let (lo, hi): (Option<i64>, Option<i64>) = c.query_row(
        &format!("SELECT min(ts), max(ts) FROM statistics WHERE 1=1{cond}"),
        params_from_iter(args.clone()),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut series = Vec::new();
    if let (Some(lo), Some(hi)) = (lo, hi) {
        let points = f.limit.clamp(1, 1000);
        let step = ((hi - lo) / points + 1).max(1_000_000_000);
        let mut p: Vec<i64> = vec![lo, step];
        p.extend(args.iter().copied());
        let mut stmt = c.prepare(&format!(
            "SELECT (ts - ?1) / ?2 AS b, min(ts), sum(packets), sum(bytes), sum(seconds) FROM statistics WHERE 1=1{} GROUP BY b ORDER BY b",
            cond
        ))?;
        // SQLite numbers the bare `?` of `cond` after ?1 and ?2, so its values follow them.
        let rows = stmt.query_map(params_from_iter(p), |r| {
            let secs = r.get::<_, i64>(4)?.max(1) as f64;
            Ok(json!({
                "ts": crate::record::rfc3339_us(r.get::<_, i64>(1)?.max(0) as u64),
                "packets": r.get::<_, i64>(2)?,
                "bytes": r.get::<_, i64>(3)?,
                "pps": r.get::<_, i64>(2)? as f64 / secs,
            }))
        })?;
        for row in rows {
            series.push(row?);
        }
    }
    Ok(json!({
        "totals": { "packets": packets, "bytes": bytes, "flows": flows, "alerts": alerts, "anomalies": anomalies },
        "protocols": { "tcp": tcp, "udp": udp, "icmp": icmp, "other": other },
        "alerts_by_kind": by_kind,
        "series": series,
        "alert_series": alert_series(c, f)?,
    }))
}

/// Alerts per kind over time (by last_seen), in at most `limit` buckets over their range.
fn alert_series(c: &Connection, f: &Filter) -> Result<Vec<Value>, ApiError> {
    let (cond, args) = range(f, "last_seen");
    let (lo, hi): (Option<i64>, Option<i64>) = c.query_row(
        &format!("SELECT min(last_seen), max(last_seen) FROM alerts WHERE 1=1{cond}"),
        params_from_iter(args.clone()),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Vec::new());
    };
    let step = ((hi - lo) / f.limit.clamp(1, 1000) + 1).max(1_000_000_000);
    let mut p: Vec<i64> = vec![lo, step];
    p.extend(args);
    // SQLite numbers the bare `?` of `cond` after ?1 and ?2.
    let mut stmt = c.prepare(&format!(
        "SELECT (last_seen - ?1) / ?2 AS b, kind, count(*) FROM alerts WHERE 1=1{cond} GROUP BY b, kind ORDER BY b, kind"
    ))?;
    let rows = stmt.query_map(params_from_iter(p), |r| {
        let b: i64 = r.get(0)?;
        Ok(json!({
            "ts": crate::record::rfc3339_us((lo + b * step).max(0) as u64),
            "kind": r.get::<_, String>(1)?,
            "count": r.get::<_, i64>(2)?,
        }))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

async fn stats(
    State(st): State<Shared>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = query(q)?.validate(&[])?;
    Ok(Json(read(&st, move |c| stats_json(c, &f)).await?))
}

async fn status(State(st): State<Shared>) -> Result<Json<Value>, ApiError> {
    let capture = st.capture.read().map(|s| s.clone()).unwrap_or_default();
    let uptime = st.started.elapsed().as_secs();
    let db = st.db.display().to_string();
    let model = read(&st, |c| {
        Ok(c.query_row("SELECT path, threshold, flows, created FROM model_versions ORDER BY id DESC LIMIT 1", [], |r| {
            Ok(json!({"path": r.get::<_, String>(0)?, "threshold": r.get::<_, f64>(1)?, "flows": r.get::<_, i64>(2)?,
                      "trained": crate::record::rfc3339_us(r.get::<_, i64>(3)?.max(0) as u64)}))
        })
        .ok())
    })
    .await
    .unwrap_or(None);
    let kernel = st.live.as_ref().map(|m| {
        let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        json!({
            "packets": g(&m.kernel_packets),
            "bytes": g(&m.kernel_bytes),
            "parse_errors": g(&m.kernel_parse_errors),
            "flow_map_insert_full": g(&m.kernel_insert_full),
            "flow_map_insert_other": g(&m.kernel_insert_other),
            "overflow_lost": g(&m.kernel_overflow_lost),
            "flows_active": g(&m.flows_active),
            "poll_latency_us": g(&m.poll_latency_us),
        })
    });
    Ok(Json(json!({
        "capture": capture,
        "database": db,
        "model": model,
        "uptime_s": uptime,
        "kernel": kernel,
    })))
}

/// Server-sent events: new alerts as they are stored, and stats every 5 s.
async fn events(
    State(st): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let stream = async_stream(st);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn async_stream(st: Shared) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut last_id: i64 = read(&st, |c| {
            Ok(c.query_row("SELECT coalesce(max(id), 0) FROM alerts", [], |r| r.get(0))?)
        })
        .await
        .unwrap_or(0);
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tick += 1;
            let since = last_id;
            let new: Vec<(i64, String)> = read(&st, move |c| {
                let mut s =
                    c.prepare("SELECT id, record FROM alerts WHERE id > ?1 ORDER BY id LIMIT 500")?;
                Ok(s.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?)
            })
            .await
            .unwrap_or_default();
            for (id, rec) in new {
                last_id = id;
                let mut v: Value = serde_json::from_str(&rec).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("id".into(), json!(id));
                }
                if tx
                    .send(Event::default().event("alert").data(v.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if tick.is_multiple_of(5) {
                let f = Filter {
                    since: None,
                    until: None,
                    kind: None,
                    severity: None,
                    ip: None,
                    limit: 60,
                    cursor: None,
                };
                if let Ok(v) = read(&st, move |c| stats_json(c, &f)).await
                    && tx
                        .send(Event::default().event("stats").data(v.to_string()))
                        .await
                        .is_err()
                {
                    return;
                }
            }
        }
    });
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

/// Prometheus text exposition.
async fn metrics(State(st): State<Shared>) -> Result<Response, ApiError> {
    let body = read(&st, |c| {
        let mut out = String::new();
        let (packets, bytes): (i64, i64) = c.query_row(
            "SELECT coalesce(sum(packets),0), coalesce(sum(bytes),0) FROM statistics",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let flows: i64 = c.query_row("SELECT count(*) FROM flows", [], |r| r.get(0))?;
        out.push_str(
            "# HELP sensor_packets_total Packets counted.\n# TYPE sensor_packets_total counter\n",
        );
        out.push_str(&format!("sensor_packets_total {packets}\n"));
        out.push_str(
            "# HELP sensor_bytes_total Bytes counted.\n# TYPE sensor_bytes_total counter\n",
        );
        out.push_str(&format!("sensor_bytes_total {bytes}\n"));
        out.push_str(
            "# HELP sensor_flows_total Finished flows stored.\n# TYPE sensor_flows_total counter\n",
        );
        out.push_str(&format!("sensor_flows_total {flows}\n"));
        out.push_str(
            "# HELP sensor_alerts_total Alerts by kind.\n# TYPE sensor_alerts_total counter\n",
        );
        let mut stmt = c.prepare("SELECT kind, count(*) FROM alerts GROUP BY kind")?;
        let rows: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for k in ALERT_KINDS {
            let n = rows
                .iter()
                .find(|(kind, _)| kind == k)
                .map_or(0, |(_, n)| *n);
            out.push_str(&format!("sensor_alerts_total{{kind=\"{k}\"}} {n}\n"));
        }
        Ok(out)
    })
    .await?;
    let mut body = body;
    if let Some(m) = &st.live {
        let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, kind, v) in [
            (
                "sensor_flows_active",
                "Flows held in the flow table.",
                "gauge",
                g(&m.flows_active),
            ),
            (
                "sensor_kernel_packets_total",
                "Packets the XDP program saw.",
                "counter",
                g(&m.kernel_packets),
            ),
            (
                "sensor_kernel_parse_errors_total",
                "Frames the XDP program could not parse.",
                "counter",
                g(&m.kernel_parse_errors),
            ),
            (
                "sensor_kernel_flow_map_full_total",
                "Flow inserts refused: map full.",
                "counter",
                g(&m.kernel_insert_full),
            ),
            (
                "sensor_kernel_flow_map_errors_total",
                "Flow inserts refused: other errors.",
                "counter",
                g(&m.kernel_insert_other),
            ),
            (
                "sensor_kernel_overflow_lost_total",
                "Packets lost by the per-host overflow maps too.",
                "counter",
                g(&m.kernel_overflow_lost),
            ),
            (
                "sensor_poll_latency_microseconds",
                "Duration of the last map poll.",
                "gauge",
                g(&m.poll_latency_us),
            ),
            ("sensor_polls_total", "Map polls.", "counter", g(&m.polls)),
            (
                "sensor_db_queue_depth",
                "Rows waiting for the database writer.",
                "gauge",
                g(&m.db_queue),
            ),
            (
                "sensor_db_dropped_total",
                "Rows the full database queue refused.",
                "counter",
                g(&m.db_dropped),
            ),
        ] {
            body.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

fn authorize(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    // Constant-time comparison: the token is a secret.
    let (a, b) = (given.as_bytes(), st.token.as_bytes());
    let diff = a.len() ^ b.len()
        | a.iter()
            .zip(b)
            .fold(0usize, |d, (x, y)| d | usize::from(x ^ y));
    if diff == 0 {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

async fn interfaces(State(st): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    Ok(Json(json!({ "items": interface_names() })))
}

/// Interface names from the kernel (`if_nameindex`): those of this process's network
/// namespace, which /sys/class/net does not always show.
fn interface_names() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return names;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    names.sort();
    names
}

async fn capture_start(
    State(st): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    Err(ApiError::Conflict(
        "this server only reads the database (sensor serve); live capture is controlled in `sensor run`".into(),
    ))
}

async fn capture_stop(
    State(st): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    capture_start(State(st), headers).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathBody {
    path: String,
}

/// Resolves a client-supplied path inside the data directory, refusing anything outside it.
fn inside_data_dir(data_dir: &Path, rel: &str) -> Result<PathBuf, ApiError> {
    let base = data_dir
        .canonicalize()
        .map_err(|_| ApiError::NotFound("the data directory does not exist".into()))?;
    let candidate = base.join(rel);
    let resolved = candidate
        .canonicalize()
        .map_err(|_| ApiError::NotFound(format!("{rel}: no such file in the data directory")))?;
    if !resolved.starts_with(&base) || !resolved.is_file() {
        return Err(ApiError::Forbidden(format!(
            "{rel}: only files inside the data directory can be used"
        )));
    }
    Ok(resolved)
}

fn body(
    b: Result<Json<PathBody>, axum::extract::rejection::JsonRejection>,
) -> Result<PathBody, ApiError> {
    b.map(|Json(b)| b)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

async fn replay(
    State(st): State<Shared>,
    headers: HeaderMap,
    b: Result<Json<PathBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let file = inside_data_dir(&st.data_dir, &body(b)?.path)?;
    let db = st.db.clone();
    let summary = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let mut store = crate::store::Store::open(&db, crate::store::Retention::default()).map_err(|e| ApiError::Internal(e.to_string()))?;
        let s = crate::replay::replay(
            std::slice::from_ref(&file),
            crate::replay::ReplayOptions {
                flow: crate::flow::FlowConfig::default(),
                rules: Some(crate::detect::RuleConfig::default()),
                model: None,
                collect_features: false,
                flows_out: &mut crate::replay::JsonlSink::None,
                alerts_out: &mut crate::replay::JsonlSink::None,
                store: Some(&mut store),
                webhook: None,
            },
        )
        .map_err(|e| match e {
            crate::replay::ReplayError::BadInput(e) => ApiError::BadRequest(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        })?;
        Ok(json!({
            "packets": s.read.packets,
            "flows": s.flows,
            "alerts": s.alerts.iter().map(|(k, n)| (k.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        }))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(summary))
}

/// Training input: a capture in the data directory, or a time range of stored flows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainBody {
    path: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// Feature rows of the stored flows that ended in `[since, until]`, oldest first, with the
/// source fan-out rebuilt from the same flows as it would have been live.
fn stored_rows(c: &Connection, since: i64, until: i64) -> Result<Vec<[f64; N_FEATURES]>, ApiError> {
    #[derive(Deserialize)]
    struct Stored {
        src_ip: std::net::IpAddr,
        dst_ip: std::net::IpAddr,
        dst_port: u16,
        #[serde(flatten)]
        numbers: FlowNumbers,
    }
    let mut stmt = c.prepare(
        "SELECT first_seen, last_seen, record FROM flows WHERE last_seen >= ?1 AND last_seen <= ?2 ORDER BY first_seen LIMIT 2000000",
    )?;
    let rows: Vec<(i64, i64, String)> = stmt
        .query_map([since, until], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let cfg = crate::detect::RuleConfig::default();
    let mut ctx = SourceContext::new(cfg.port_scan_window_s * 1_000_000_000, cfg.max_tracked);
    let mut out = Vec::with_capacity(rows.len());
    for (first, last, rec) in rows {
        let Ok(f) = serde_json::from_str::<Stored>(&rec) else {
            continue;
        };
        ctx.on_event(&crate::flow::FlowEvent {
            ts_ns: first.max(0) as u64,
            src: f.src_ip,
            dst: f.dst_ip,
            dst_port: f.dst_port,
            proto: 0,
            family: 0,
            key_dst_port: f.dst_port,
            new_flow: true,
            from_src: true,
            packets: 1,
            bytes: 0,
            syn: 0,
            syn_ack: 0,
            rst: 0,
            completed: false,
        });
        out.push(number_features(
            &f.numbers,
            ctx.fan_out(f.src_ip, last.max(0) as u64),
        ));
    }
    Ok(out)
}

async fn train(
    State(st): State<Shared>,
    headers: HeaderMap,
    b: Result<Json<TrainBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let b = b
        .map(|Json(b)| b)
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    enum Source {
        File(PathBuf),
        Range(i64, i64),
    }
    let source = match (b.path, b.since, b.until) {
        (Some(p), None, None) => Source::File(inside_data_dir(&st.data_dir, &p)?),
        (None, Some(s), Some(u)) => {
            let (s, u) = (parse_time("since", &s)?, parse_time("until", &u)?);
            if s > u {
                return Err(ApiError::BadRequest("since is after until".into()));
            }
            Source::Range(s, u)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give either {\"path\"} or {\"since\", \"until\"}".into(),
            ));
        }
    };
    let out = st.data_dir.join("model.json");
    let db = st.db.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let (rows, what) = match source {
            Source::File(file) => {
                let s = crate::replay::replay(
                    std::slice::from_ref(&file),
                    crate::replay::ReplayOptions {
                        flow: crate::flow::FlowConfig::default(),
                        rules: Some(crate::detect::RuleConfig::default()),
                        model: None,
                        collect_features: true,
                        flows_out: &mut crate::replay::JsonlSink::None,
                        alerts_out: &mut crate::replay::JsonlSink::None,
                        store: None,
                        webhook: None,
                    },
                )
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                (s.features, file.display().to_string())
            }
            Source::Range(since, until) => {
                let c = open_ro(&db).map_err(|e| ApiError::Internal(e.to_string()))?;
                let rows = stored_rows(&c, since, until)?;
                (rows, format!("stored flows {} .. {}", crate::record::rfc3339_us(since as u64), crate::record::rfc3339_us(until as u64)))
            }
        };
        let m = crate::detect::model::Model::train(&rows, crate::detect::iforest::ForestParams::default(), 0.1, vec![what])
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        m.save(&out).map_err(|e| ApiError::Internal(e.to_string()))?;
        let store = crate::store::Store::open(&db, crate::store::Retention::default()).map_err(|e| ApiError::Internal(e.to_string()))?;
        store
            .model_version(&out.display().to_string(), m.threshold, m.training.flows as u64, serde_json::to_string(&m.training).unwrap_or_default())
            .and_then(|()| store.sync())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(json!({ "model": out.display().to_string(), "flows": m.training.flows, "threshold": m.threshold }))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(r))
}

/// Binds `addr`; a clear error when it is taken or not permitted.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
