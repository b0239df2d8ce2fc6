//! `/api/rules` (bearer token): the rules in force (built-in thresholds and operator rules),
//! a dry run of changed rules over the rules history, applying them to the running sensor
//! (config file written, audit row), and the audit of past changes. The dashboard's rule
//! editor is a client of these.

use std::{net::SocketAddr, time::SystemTime};

use axum::{Extension, Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, Shared,
    extract::{ApiJson, ApiQuery},
    read,
    read::parse_time,
    schema::{ActionErrors, ErrorBody},
};
use crate::{
    detect::RuleConfig,
    history::{
        self,
        dry_run::{Ctx, dry_run as run_dry},
    },
    record::rfc3339_us,
    report::Report,
    ruleset::{self, RuleChange, RulesetError},
    sink::store::read as q,
};

/// The client's address, set on each connection by the server.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// A dry run's range at most: a week of history.
const MAX_RANGE_NS: u64 = 7 * 86_400 * 1_000_000_000;
/// Alerts the sensor raised over a dry run's range, listed at most.
const FIRED_LISTED: i64 = 500;

impl From<RulesetError> for ApiError {
    fn from(e: RulesetError) -> Self {
        match e {
            RulesetError::Invalid(m) => Self::BadRequest(m),
            // The operator's own file: what is wrong with it is theirs to read.
            e @ RulesetError::FileChanged { .. } => Self::Conflict(e.to_string()),
            e @ RulesetError::Write { .. } => Self::Unavailable(Report(&e).to_string()),
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What the history directory holds now.
fn history_view(st: &Shared) -> Value {
    let Some(dir) = &st.history_dir else {
        return json!({ "enabled": false });
    };
    let segs = history::segments(dir).unwrap_or_default();
    let bytes: u64 = segs.iter().map(|s| s.bytes).sum();
    let last = segs
        .last()
        .and_then(|s| std::fs::metadata(&s.path).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| rfc3339_us(d.as_nanos() as u64));
    json!({
        "enabled": true,
        "segments": segs.len(),
        "bytes": bytes,
        "from": segs.first().map(|s| rfc3339_us(s.first_ns)),
        "to": last,
    })
}

#[utoipa::path(
    get,
    path = "/api/rules",
    tag = "rules",
    description = "The rules in force: built-in thresholds and operator rules (as JSON, and as the TOML the editor edits), their defaults, the config file they are written to, and what the rules history holds for dry runs.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`rules`, `defaults`, `toml` (the whole `[rules]`), `custom_toml` (the operator rules alone), `config_file`, `live`, `history`", body = Object),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn get_rules(State(st): State<Shared>) -> Result<Json<Value>, ApiError> {
    let rules = st.rules();
    Ok(Json(json!({
        "rules": rules,
        "defaults": RuleConfig::default(),
        "toml": ruleset::to_toml(&rules),
        "custom_toml": ruleset::custom_toml(&rules),
        "config_file": st.config_path.as_ref().map(|p| p.display().to_string()),
        "live": st.live.is_some(),
        "history": history_view(&st),
    })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DryRunBody {
    /// The changed rules: a `[rules]` table and its `[[rules.custom]]` (keys left out take
    /// their defaults).
    #[schema(example = "[rules]\nport_scan_ports = 15\n")]
    toml: String,
    /// Start of the range, RFC 3339 or Unix seconds (default: an hour ago).
    from: Option<String>,
    /// End of the range (default: now).
    to: Option<String>,
    /// Instead of the history: a capture in the data directory, replayed with the rules in
    /// force to record its history first (`from` and `to` then do not apply).
    path: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/rules/dry-run",
    tag = "rules",
    description = "Runs the rules history of a range (or of a capture in the data directory, `path`) through the rules in force and through changed rules: which alerts the change would raise, which it would no longer raise, which stay; beside them, what the sensor raised over the range. The live pipeline is not touched.",
    request_body = DryRunBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`would_raise`, `would_not_raise`, `unchanged` (each with a total), `fired` (what the sensor raised), `history` read, `elapsed_ms`", body = Object),
        ActionErrors,
    )
)]
pub(super) async fn dry_run(
    State(st): State<Shared>,
    ApiJson(b): ApiJson<DryRunBody>,
) -> Result<Json<Value>, ApiError> {
    let candidate = ruleset::parse(&b.toml, &st.config)?;
    if let Some(p) = &b.path {
        return dry_run_capture(&st, p, candidate).await;
    }
    let now = now_ns();
    let to = match &b.to {
        Some(t) => parse_time("to", t)?.max(0) as u64,
        None => now,
    };
    let from = match &b.from {
        Some(f) => parse_time("from", f)?.max(0) as u64,
        None => to.saturating_sub(3_600 * 1_000_000_000),
    };
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    if to - from > MAX_RANGE_NS {
        return Err(ApiError::BadRequest(
            "a dry run covers at most 7 days".into(),
        ));
    }
    let Some(dir) = st.history_dir.clone() else {
        return Err(ApiError::Conflict(
            "the rules history is off ([history] enabled = false): there is nothing to dry-run on"
                .into(),
        ));
    };
    let slot = super::control::job_slot(&st)?;
    if let Some(l) = &st.live {
        l.control.flush_history().await?;
    }
    let current = st.rules();
    let ctx = Ctx {
        networks: st.config.networks.build(),
        geo: crate::geo::Geo::lazy(&st.config.geo.dir),
    };
    let result = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        run_dry(&dir, from, to, &current, &candidate, &ctx)
    })
    .await
    .map_err(|e| ApiError::Internal(Report(&e).to_string()))?
    .map_err(|e| match e {
        history::HistoryError::Range(m) => ApiError::BadRequest(m),
        e => ApiError::Internal(Report(&e).to_string()),
    })?;
    let mut out = serde_json::to_value(&result).map_err(|e| ApiError::Internal(e.to_string()))?;
    // What the sensor raised over the part of the range the history covers (before the
    // history began, or after it was deleted, there is nothing to set it beside).
    let covered = result
        .history
        .first_ns
        .zip(result.history.last_ns)
        .map(|(a, b)| (a.max(from), b.min(to)));
    let (fired, fired_total) = match covered {
        Some((a, b)) if a <= b && st.db.exists() => {
            read(&st, move |c| Ok(q::alerts_between(c, a, b, FIRED_LISTED)?)).await?
        }
        _ => (Vec::new(), 0),
    };
    out["fired"] = Value::Array(fired);
    out["fired_total"] = json!(fired_total);
    Ok(Json(out))
}

/// A dry run on a capture: its history recorded into a directory of its own (removed after),
/// then the same side-by-side run.
async fn dry_run_capture(
    st: &Shared,
    path: &str,
    candidate: RuleConfig,
) -> Result<Json<Value>, ApiError> {
    let file = super::control::inside_data_dir(&st.data_dir, path)?;
    let slot = super::control::job_slot(st)?;
    let config = st.current_config();
    let tmp = st
        .data_dir
        .join(format!(".dry-run-{}-{}", std::process::id(), now_ns()));
    let ctx = Ctx {
        networks: config.networks.build(),
        geo: crate::geo::Geo::lazy(&config.geo.dir),
    };
    let result = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let _slot = slot;
        let recorded =
            crate::drive::replay::record_history(std::slice::from_ref(&file), &config, &tmp)
                .map_err(|e| match e {
                    crate::drive::replay::ReplayError::BadInput(e) => {
                        ApiError::BadRequest(Report(&e).to_string())
                    }
                    other => ApiError::Internal(Report(&other).to_string()),
                });
        let out = recorded.and_then(|_| {
            run_dry(&tmp, 0, u64::MAX, &config.rules, &candidate, &ctx)
                .map_err(|e| ApiError::Internal(Report(&e).to_string()))
        });
        let _ignored = std::fs::remove_dir_all(&tmp);
        let mut v = serde_json::to_value(out?).map_err(|e| ApiError::Internal(e.to_string()))?;
        v["capture"] = json!(file.display().to_string());
        v["fired"] = json!([]);
        v["fired_total"] = json!(0);
        Ok(v)
    })
    .await
    .map_err(|e| ApiError::Internal(Report(&e).to_string()))??;
    Ok(Json(result))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyBody {
    /// The rules to apply, as for a dry run.
    toml: String,
    /// Who applies them (the audit row's `actor`; the token is shared).
    #[schema(min_length = 1, max_length = 64, example = "alice")]
    actor: String,
}

#[utoipa::path(
    put,
    path = "/api/rules",
    tag = "rules",
    description = "Applies changed rules to the running sensor: the config file's [rules] is replaced (written beside it and renamed over it, the previous file kept as NAME.prev), the rules are swapped into the running pipeline (open alerts stay open), and an audit row records who, when and what. Live only.",
    request_body = ApplyBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`applied`, `change_id` (the audit row), `changes`, `file`, `previous`", body = Object),
        ActionErrors,
    )
)]
pub(super) async fn apply(
    State(st): State<Shared>,
    peer: Option<Extension<Peer>>,
    ApiJson(b): ApiJson<ApplyBody>,
) -> Result<Json<Value>, ApiError> {
    let actor = b.actor.trim().to_owned();
    if actor.is_empty() || actor.chars().count() > 64 || actor.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "actor must be 1 to 64 printable characters: who applies the change".into(),
        ));
    }
    let Some(live) = &st.live else {
        return Err(ApiError::Conflict(
            "this server only reads the database (sensor serve): rules are applied to a running `sensor run`"
                .into(),
        ));
    };
    let new = ruleset::parse(&b.toml, &st.config)?;
    // One apply at a time: each reads the rules in force and writes the file.
    let _one = st.applying.lock().await;
    let current = st.rules();
    let changes = ruleset::describe(&current, &new);
    if changes.is_empty() {
        return Ok(Json(json!({
            "applied": false,
            "changes": [],
            "message": "these are the rules in force: nothing to apply",
        })));
    }
    let written = match st.config_path.clone() {
        Some(path) => {
            let rules = new.clone();
            Some(
                tokio::task::spawn_blocking(move || ruleset::write(&path, &rules))
                    .await
                    .map_err(|e| ApiError::Internal(Report(&e).to_string()))??,
            )
        }
        None => None,
    };
    let ts_ns = now_ns();
    let change = RuleChange {
        ts_ns,
        actor,
        remote: peer.map(|Extension(Peer(a))| a.ip().to_string()),
        changes: changes.clone(),
        before: ruleset::to_toml(&current),
        after: ruleset::to_toml(&new),
        file: written.as_ref().map(|w| w.path.display().to_string()),
    };
    live.control.set_rules(new.clone(), change).await?;
    st.set_rules(new);
    let change_id = stored_change(&st, ts_ns).await;
    Ok(Json(json!({
        "applied": true,
        "change_id": change_id,
        "changes": changes,
        "file": written.as_ref().map(|w| w.path.display().to_string()),
        "previous": written.as_ref().and_then(|w| w.previous.as_ref()).map(|p| p.display().to_string()),
        "note": if written.is_none() { Some("the sensor runs without --config: the change is live only and is lost at restart") } else { None },
    })))
}

/// The audit row of the change made at `ts_ns`, once the store's writer has it (2 s at most):
/// the answer names it, and the client's next read of the audit sees it.
async fn stored_change(st: &Shared, ts_ns: u64) -> Option<i64> {
    if !st.db.exists() {
        return None;
    }
    let ts = rfc3339_us(ts_ns);
    for _ in 0..40 {
        let rows = read(st, |c| Ok(q::rule_changes(c, 5)?)).await.ok()?;
        if let Some(id) = rows
            .iter()
            .find(|r| r["ts"] == ts.as_str())
            .and_then(|r| r["id"].as_i64())
        {
            return Some(id);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ChangesQuery {
    /// Rows, newest first (1 to 200, default 50).
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,3}$")]
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/rules/changes",
    tag = "rules",
    description = "Changes of the rules applied from the editor or the API: who, when, from where, what changed, the rules before and after.",
    params(ChangesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`items`, newest first", body = Object),
        (status = 400, description = "Bad limit", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn changes(
    State(st): State<Shared>,
    ApiQuery(qy): ApiQuery<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match qy.limit.as_deref() {
        None => 50,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(
                    "limit must be an integer from 1 to 200".into(),
                ));
            }
        },
    };
    let items = if st.db.exists() {
        read(&st, move |c| Ok(q::rule_changes(c, limit)?)).await?
    } else {
        Vec::new()
    };
    Ok(Json(json!({ "items": items })))
}
