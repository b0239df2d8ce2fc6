//! `/api/blocklist` (bearer token): the mitigation entries in force with their kernel drop
//! counters, the audit log, and adding and removing blocks by hand. Entries live in the
//! running sensor (`sensor run`); `sensor serve` shows the audit log only.

use axum::{Json, extract::State, http::StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, Shared,
    extract::{ApiJson, ApiQuery},
    read,
    schema::{ActionErrors, ErrorBody},
};
use crate::{
    mitigate::{MAX_TTL_S, parse_prefix},
    sink::store::read as q,
};

/// Audit rows returned with the entries.
const AUDIT_ROWS: i64 = 200;

#[utoipa::path(
    get,
    path = "/api/blocklist",
    tag = "control",
    description = "Mitigation entries in force with their kernel drop counters (live), and the audit log.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`entries`, `audit`, `live`, `xdp_attached`", body = Object),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "The live loop or the database is not available now", body = ErrorBody),
    )
)]
pub(super) async fn list(State(st): State<Shared>) -> Result<Json<Value>, ApiError> {
    let audit = if st.db.exists() {
        read(&st, |c| Ok(q::mitigations(c, AUDIT_ROWS)?)).await?
    } else {
        Vec::new()
    };
    let mut out = match &st.live {
        Some(l) => l.control.blocklist().await?,
        None => json!({ "entries": [], "xdp_attached": false }),
    };
    // Entries name their alert by its id in this run; the audit row that created each names
    // the stored alert (the id the alert endpoints use).
    if let Some(entries) = out.get_mut("entries").and_then(Value::as_array_mut) {
        for e in entries {
            let stored = audit
                .iter()
                .find(|a| {
                    a["target"] == e["target"]
                        && matches!(a["action"].as_str(), Some("block" | "renew" | "rate_limit"))
                })
                .map(|a| a["alert_id"].clone());
            e["alert_id"] = stored.unwrap_or(Value::Null);
        }
    }
    out["live"] = json!(st.live.is_some());
    out["audit"] = Value::Array(audit);
    Ok(Json(out))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BlockBody {
    /// An address or prefix (IPv4 or IPv6).
    #[schema(min_length = 1, example = "198.51.100.0/24")]
    prefix: String,
    /// Seconds (default: `[mitigation] ttl_s`).
    ttl_s: Option<u64>,
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/blocklist",
    tag = "control",
    description = "Blocks a source prefix at XDP for a time; live only.",
    request_body = BlockBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The entry", body = Object),
        ActionErrors,
    )
)]
pub(super) async fn add(
    State(st): State<Shared>,
    ApiJson(b): ApiJson<BlockBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let net = parse_prefix(&b.prefix)?;
    let ttl = b.ttl_s.unwrap_or(st.config.mitigation.ttl_s);
    if ttl == 0 || ttl > MAX_TTL_S {
        return Err(ApiError::BadRequest(format!(
            "ttl_s must be within 1 and {MAX_TTL_S}"
        )));
    }
    let reason = b
        .reason
        .map(|r| r.chars().filter(|c| !c.is_control()).take(200).collect())
        .filter(|r: &String| !r.trim().is_empty())
        .unwrap_or_else(|| "blocked through the API".into());
    let live = st.live.as_ref().ok_or_else(read_only)?;
    let entry = live.control.block(net, ttl, reason).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveQuery {
    /// A blocked prefix, or `rate:ADDR/PROTO` for a rate limit.
    target: String,
}

#[utoipa::path(
    delete,
    path = "/api/blocklist",
    tag = "control",
    description = "Removes a block or a rate limit; live only.",
    params(RemoveQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The entry removed", body = Object),
        ActionErrors,
    )
)]
pub(super) async fn remove(
    State(st): State<Shared>,
    ApiQuery(q): ApiQuery<RemoveQuery>,
) -> Result<Json<Value>, ApiError> {
    let live = st.live.as_ref().ok_or_else(read_only)?;
    Ok(Json(live.control.unblock(q.target).await?))
}

fn read_only() -> ApiError {
    ApiError::Conflict(
        "this server only reads the database (sensor serve); blocks are held by `sensor run`"
            .into(),
    )
}
