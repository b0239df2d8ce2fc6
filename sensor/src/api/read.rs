//! Read endpoints: lists with filters and cursor pagination, statistics, status. Parameters
//! are validated into typed values first; the SQL is in [`crate::sink::store::read`].

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, Shared,
    extract::{ApiPath, ApiQuery},
    read,
    schema::{
        AlertDetail, AlertPage, AnomalyPage, ErrorBody, FlowPage, Origins, ReadErrors, Stats,
        SuspiciousIps, TopTalkers,
    },
};
use crate::{
    record::AlertKind,
    sink::store::read::{self as q, Filter, Table},
};

/// Query parameters shared by the list endpoints, as received (as text: each is checked by
/// [`ListQuery::validate`], whose messages say what is expected).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// From this time on: RFC 3339 or Unix seconds.
    #[param(example = "2026-12-05T08:00:00Z")]
    since: Option<String>,
    /// Up to this time: RFC 3339 or Unix seconds.
    until: Option<String>,
    /// Alerts of this kind only (alerts only).
    #[param(value_type = Option<AlertKind>)]
    kind: Option<String>,
    /// Rows of this severity only (not flows).
    #[param(value_type = Option<SeverityFilter>)]
    severity: Option<String>,
    /// Rows whose source or destination is this IPv4 or IPv6 address.
    #[param(example = "192.0.2.7")]
    ip: Option<String>,
    /// Rows per page (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page (of the same sort).
    cursor: Option<String>,
    /// `time` (newest first, the default) or `score` (highest model score first).
    #[param(value_type = Option<Sort>)]
    sort: Option<String>,
    /// Rows whose model score is at least this.
    #[param(value_type = Option<f64>, minimum = 0, maximum = 1)]
    min_score: Option<String>,
    /// Alerts only: `open`, `closed` or `merged`.
    #[param(value_type = Option<crate::record::AlertState>)]
    state: Option<String>,
    /// Alerts only: whose remote side is in this country (ISO 3166-1 alpha-2, `[geo]`).
    #[param(pattern = "^[A-Z]{2}$", example = "NL")]
    country: Option<String>,
    /// Alerts only: whose remote side is in this autonomous system (`[geo]`): its number, 0 to
    /// 4294967295.
    #[param(pattern = "^[0-9]{1,10}$", example = "64500")]
    asn: Option<String>,
}

/// List order.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code, reason = "documents the values `sort` takes")]
pub(super) enum Sort {
    Time,
    Score,
}

/// The severities a filter takes (`normal` is no alert's).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code, reason = "documents the values `severity` takes")]
pub(super) enum SeverityFilter {
    Low,
    Medium,
    High,
    Critical,
}

/// RFC 3339 or Unix seconds, to ns.
pub(super) fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
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
        let by_score = match self.sort.as_deref() {
            None | Some("time") => false,
            Some("score") => true,
            Some(_) => return Err(ApiError::BadRequest("sort must be time or score".into())),
        };
        let bad_cursor = || {
            ApiError::BadRequest(if by_score {
                "cursor must be the next_cursor of a score-sorted page".into()
            } else {
                "cursor must be a positive integer".into()
            })
        };
        let (cursor, cursor_score) = match self.cursor.as_deref() {
            None => (None, None),
            Some(c) if by_score => {
                let (s, id) = c.split_once('_').ok_or_else(bad_cursor)?;
                let s = s
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite())
                    .ok_or_else(bad_cursor)?;
                let id = id
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(bad_cursor)?;
                (Some(id), Some(s))
            }
            Some(c) => (
                Some(
                    c.parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(bad_cursor)?,
                ),
                None,
            ),
        };
        let min_score = match self.min_score.as_deref() {
            None => None,
            Some(m) => Some(
                m.parse::<f64>()
                    .ok()
                    .filter(|m| (0.0..=1.0).contains(m))
                    .ok_or_else(|| {
                        ApiError::BadRequest("min_score must be a number from 0 to 1".into())
                    })?,
            ),
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
        if let Some(st) = &self.state
            && !["open", "closed", "merged"].contains(&st.as_str())
        {
            return Err(ApiError::BadRequest(
                "state must be open, closed or merged".into(),
            ));
        }
        if let Some(c) = &self.country
            && !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(ApiError::BadRequest(
                "country must be an ISO 3166-1 alpha-2 code in capitals, like NL".into(),
            ));
        }
        let asn = match self.asn.as_deref() {
            None => None,
            Some(a) => Some(a.parse::<u32>().map_err(|_| {
                ApiError::BadRequest(
                    "asn must be an AS number from 0 to 4294967295, like 64500".into(),
                )
            })?),
        };
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
            by_score,
            cursor_score,
            min_score,
            state: self.state,
            country: self.country,
            asn,
        })
    }
}

/// The kinds an alert filter accepts.
fn alert_kinds() -> Vec<&'static str> {
    AlertKind::names()
}

#[utoipa::path(
    get,
    path = "/api/alerts",
    tag = "read",
    description = "Alerts (incidents), newest first: open ones are updated while their attack runs.",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = AlertPage),
        ReadErrors,
    )
)]
pub(super) async fn alerts(
    State(st): State<Shared>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.validate(&alert_kinds())?;
    Ok(Json(
        read(&st, move |c| Ok(q::list(c, Table::Alerts, &f)?)).await?,
    ))
}

/// `GET /api/alerts/{id}`: one alert with what an operator investigates it by (its packets
/// over time, flows, model anomalies, mitigation, the alerts merged into it).
#[utoipa::path(
    get,
    path = "/api/alerts/{id}",
    tag = "read",
    params(("id" = i64, Path, description = "The alert's row id", minimum = 1, example = 1)),
    responses(
        (status = 200, description = "OK", body = AlertDetail),
        (status = 400, description = "A parameter is not valid", body = ErrorBody),
        (status = 404, description = "No such item", body = ErrorBody),
        (status = 503, description = "The database is locked or cannot be read now", body = ErrorBody),
    )
)]
pub(super) async fn alert(
    State(st): State<Shared>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 =
        id.parse().ok().filter(|i| *i > 0).ok_or_else(|| {
            ApiError::BadRequest("the alert id must be a positive integer".into())
        })?;
    read(&st, move |c| Ok(q::alert_detail(c, id)?))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no alert {id}")))
}

#[utoipa::path(
    get,
    path = "/api/anomalies",
    tag = "read",
    description = "Flows (or flow events) the model judged anomalous, newest or highest scored first.",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = AnomalyPage),
        ReadErrors,
    )
)]
pub(super) async fn anomalies(
    State(st): State<Shared>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.validate(&[])?;
    if f.kind.is_some() || f.country.is_some() || f.asn.is_some() {
        return Err(ApiError::BadRequest(
            "anomalies have no kind, country or asn filter".into(),
        ));
    }
    Ok(Json(
        read(&st, move |c| Ok(q::list(c, Table::Anomalies, &f)?)).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/flows",
    tag = "read",
    description = "Finished flows, newest first (an attack's small flows past its first rows are summed into its alert).",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = FlowPage),
        ReadErrors,
    )
)]
pub(super) async fn flows(
    State(st): State<Shared>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.validate(&[])?;
    if f.kind.is_some() || f.severity.is_some() || f.country.is_some() || f.asn.is_some() {
        return Err(ApiError::BadRequest(
            "flows have no kind, severity, country or asn filter".into(),
        ));
    }
    Ok(Json(
        read(&st, move |c| Ok(q::list(c, Table::Flows, &f)?)).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/top-talkers",
    tag = "read",
    description = "Sources by bytes sent (without since: the hour up to the newest flow).",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = TopTalkers),
        ReadErrors,
    )
)]
pub(super) async fn top_talkers(
    State(st): State<Shared>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.validate(&[])?;
    let mut v = read(&st, move |c| Ok(q::top_talkers(c, &f)?)).await?;
    with_origins(&st, &mut v);
    Ok(Json(v))
}

/// Each item's `ip` with its country and AS, when `[geo]` has them.
fn with_origins(st: &Shared, v: &mut Value) {
    let Some(geo) = crate::geo::load(&st.config.geo.dir).ok().flatten() else {
        return;
    };
    for item in v["items"].as_array_mut().into_iter().flatten() {
        let origin = item["ip"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .and_then(|ip| geo.lookup(ip));
        item["origin"] = serde_json::to_value(origin).unwrap_or(Value::Null);
    }
}

#[utoipa::path(
    get,
    path = "/api/origins",
    tag = "read",
    description = "Where attacks came from: alerts by their remote side's country and autonomous system (`[geo]`).",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = Origins),
        ReadErrors,
    )
)]
pub(super) async fn origins(
    State(st): State<Shared>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.validate(&[])?;
    Ok(Json(read(&st, move |c| Ok(q::origins(c, &f)?)).await?))
}

#[utoipa::path(
    get,
    path = "/api/suspicious-ips",
    tag = "read",
    description = "Sources of attack alerts, worst first.",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = SuspiciousIps),
        ReadErrors,
    )
)]
pub(super) async fn suspicious_ips(
    State(st): State<Shared>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.validate(&[])?;
    let mut v = read(&st, move |c| Ok(q::suspicious_ips(c, &f)?)).await?;
    with_origins(&st, &mut v);
    Ok(Json(v))
}

#[utoipa::path(
    get,
    path = "/api/stats",
    tag = "read",
    description = "Totals, protocols, alerts by kind, and time series for the charts.",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = Stats),
        ReadErrors,
    )
)]
pub(super) async fn stats(
    State(st): State<Shared>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.validate(&[])?;
    Ok(Json(read(&st, move |c| Ok(q::stats(c, &f)?)).await?))
}

/// What the sensor is doing: capture state (what is attached, live), model, database, kernel
/// counters.
#[utoipa::path(
    get,
    path = "/api/status",
    tag = "read",
    responses(
        (status = 200, description = "Capture state, database, models, uptime; live: kernel counters and database writes", body = Object),
    )
)]
pub(super) async fn status(State(st): State<Shared>) -> Result<Json<Value>, ApiError> {
    let uptime = st.started.elapsed().as_secs();
    let db = st.db.display().to_string();
    let model = read(&st, |c| Ok(q::latest_model(c)?)).await.unwrap_or(None);
    let online = st.live.as_ref().and_then(|l| l.control.online_info());
    let (capture, attached, kernel, loaded) = match &st.live {
        None => (
            "read-only (sensor serve reads the database; live capture is `sensor run`)".to_owned(),
            Vec::new(),
            None,
            None,
        ),
        Some(live) => {
            let attached = live.control.attachments();
            let capture = if attached.is_empty() {
                "idle".to_owned()
            } else {
                format!(
                    "live on {}",
                    attached
                        .iter()
                        .map(|a| match a.state {
                            "up" => format!("{} ({})", a.iface, a.mode),
                            state => format!("{} ({}, {state})", a.iface, a.mode),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            // The same values as `/metrics`, under the names status has always used.
            let g = |name: &str| live.metrics.value(name).unwrap_or(0);
            let kernel = json!({
                "packets": g("sensor_kernel_packets_total"),
                "bytes": g("sensor_kernel_bytes_total"),
                "parse_errors": g("sensor_kernel_parse_errors_total"),
                "flow_map_insert_full": g("sensor_kernel_flow_map_full_total"),
                "flow_map_insert_other": g("sensor_kernel_flow_map_errors_total"),
                "overflow_lost": g("sensor_kernel_overflow_lost_total"),
                "flows_active": g("sensor_flows_active"),
                "poll_latency_us": g("sensor_poll_latency_microseconds"),
                "polls": g("sensor_polls_total"),
                "poll_cycle_us": g("sensor_poll_cycle_microseconds"),
                "poll_cycle_max_us": g("sensor_poll_cycle_max_microseconds"),
                "polls_late": g("sensor_polls_late_total"),
                "pcap_packets": g("sensor_pcap_packets_total"),
                "alerts_raised": g("sensor_alerts_raised_total"),
            });
            (
                capture,
                attached,
                Some(kernel),
                Some((live.control.model(), live.control.model_info())),
            )
        }
    };
    let (loaded, in_use) = loaded.unwrap_or((None, None));
    // Live only: whether rows reach the database, or wait in memory because it fails.
    let writes = st.live.as_ref().and_then(|l| l.store.as_ref()).map(|w| {
        let n = |a: &std::sync::atomic::AtomicUsize| a.load(std::sync::atomic::Ordering::Relaxed);
        json!({
            "ok": w.failure().is_none(),
            "error": w.failure(),
            "pending_rows": n(&w.pending),
            "queued_rows": n(&w.queued),
            "dropped_rows": w.dropped.load(std::sync::atomic::Ordering::Relaxed),
            "failed_commits": w.errors.load(std::sync::atomic::Ordering::Relaxed),
        })
    });
    Ok(Json(json!({
        "capture": capture,
        "live": st.live.is_some(),
        "attached": attached,
        "database": db,
        "model": model,
        "model_loaded": loaded,
        // The running pipeline's model: threshold, how it was chosen, expected alert rate.
        "model_in_use": in_use,
        // The online second model (KitNET), when `sensor run --online-model` loaded one.
        "online_model_in_use": online,
        "uptime_s": uptime,
        "kernel": kernel,
        "database_writes": writes,
    })))
}
