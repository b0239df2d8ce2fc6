//! `/api/upstream` (bearer token): mitigation upstream over BGP: the speaker's sessions, the
//! FlowSpec rules and blackhole routes announced now, their audit rows, and withdrawing one by
//! hand. Live only (`sensor run`); `sensor serve` shows the audit rows.

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, Shared,
    extract::ApiQuery,
    read,
    schema::{ActionErrors, ErrorBody},
};
use crate::sink::store::read as q;

/// Audit rows looked through for the upstream's own.
const AUDIT_ROWS: i64 = 500;

/// Whether an audit row is about the upstream (an announcement or a session).
fn upstream_row(row: &Value) -> bool {
    row["target"].as_str().is_some_and(|t| {
        ["flowspec:", "rtbh:", "bgp:", "upstream:"]
            .iter()
            .any(|p| t.starts_with(p))
    })
}

#[utoipa::path(
    get,
    path = "/api/upstream",
    tag = "control",
    description = "Mitigation upstream over BGP: sessions, announcements in force (FlowSpec, RTBH) and their audit rows.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`enabled`, `sessions`, `announcements`, `audit`, `live`", body = Object),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "The live loop or the database is not available now", body = ErrorBody),
    )
)]
pub(super) async fn list(State(st): State<Shared>) -> Result<Json<Value>, ApiError> {
    let audit: Vec<Value> = if st.db.exists() {
        read(&st, |c| Ok(q::mitigations(c, AUDIT_ROWS)?))
            .await?
            .into_iter()
            .filter(upstream_row)
            .collect()
    } else {
        Vec::new()
    };
    let mut out = match &st.live {
        Some(l) => l.control.upstream().await?,
        None => json!({ "enabled": st.config.bgp.enabled, "sessions": [], "announcements": [] }),
    };
    // Announcements name their alert by its id in this run; the newest audit row that gave
    // each its owner names the stored alert (the id the alert endpoints use).
    if let Some(list) = out.get_mut("announcements").and_then(Value::as_array_mut) {
        for a in list {
            let stored = audit
                .iter()
                .find(|r| {
                    r["target"] == a["target"]
                        && matches!(
                            r["action"].as_str(),
                            Some("announce" | "renew" | "reannounce")
                        )
                })
                .map(|r| r["alert_id"].clone());
            a["alert_id"] = stored.unwrap_or(Value::Null);
        }
    }
    out["live"] = json!(st.live.is_some());
    out["audit"] = Value::Array(audit);
    Ok(Json(out))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct WithdrawQuery {
    /// The announcement's name, as `/api/upstream` lists it (`flowspec:...`, `rtbh:...`).
    target: String,
}

#[utoipa::path(
    delete,
    path = "/api/upstream",
    tag = "control",
    description = "Withdraws an upstream announcement now (its alert does not renew it); live only.",
    params(WithdrawQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The announcement withdrawn", body = Object),
        ActionErrors,
    )
)]
pub(super) async fn withdraw(
    State(st): State<Shared>,
    ApiQuery(q): ApiQuery<WithdrawQuery>,
) -> Result<Json<Value>, ApiError> {
    let live = st.live.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "this server only reads the database (sensor serve); announcements are held by `sensor run`"
                .into(),
        )
    })?;
    Ok(Json(live.control.withdraw(q.target).await?))
}
