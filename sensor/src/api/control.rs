//! Control endpoints (bearer token): capture start/stop and interfaces (live in `sensor run`,
//! 409 in `sensor serve`), replay of a capture in the data directory, and model training from
//! a capture or a time range of stored flows, swapped into the running pipeline live.

use std::path::{Path, PathBuf};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, header},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, ApiState, Shared,
    extract::ApiJson,
    read::parse_time,
    schema::{ActionErrors, ErrorBody},
};
use crate::report::Report;
use crate::{
    detect::ml::model::Model,
    drive::replay::{ReplayError, ReplayOptions, replay as replay_files},
    evidence::{Recorder, Window},
    record::rfc3339_us,
    sink::store::{Store, StoreSink, open_ro, read as q},
    source::attached::CaptureMode,
};

pub(super) fn authorize(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
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

/// Takes the one slot for a replay or training; the blocking job holds it (so a client
/// that hangs up does not free it while the job still runs).
pub(super) fn job_slot(st: &Shared) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    std::sync::Arc::clone(&st.jobs)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::Conflict(
            "a replay or training started from the API is still running; try again when it ends"
                .into(),
        )
        })
}

fn read_only() -> ApiError {
    ApiError::Conflict(
        "this server only reads the database (sensor serve); live capture is controlled by \
         `sensor run` (start it without --iface to attach from here)"
            .into(),
    )
}

/// Interfaces of the sensor's network namespace, and which of them this sensor watches.
#[utoipa::path(
    get,
    path = "/api/interfaces",
    tag = "control",
    description = "Interfaces of the sensor's network namespace and which are watched.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`items`: name, attached, mode; `live`", body = Object),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn interfaces(State(st): State<Shared>) -> Result<Json<Value>, ApiError> {
    let attached = st
        .live
        .as_ref()
        .map(|l| l.control.attachments())
        .unwrap_or_default();
    let items: Vec<Value> = interface_names()
        .into_iter()
        .map(|name| {
            let a = attached.iter().find(|a| a.iface == name);
            json!({ "name": name, "attached": a.is_some(), "mode": a.map(|a| a.mode) })
        })
        .collect();
    Ok(Json(json!({ "items": items, "live": st.live.is_some() })))
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartBody {
    /// An interface name of the sensor's namespace.
    #[schema(min_length = 1, max_length = 15)]
    iface: String,
    #[serde(default = "auto")]
    #[schema(default = "auto")]
    mode: CaptureMode,
}

fn auto() -> CaptureMode {
    CaptureMode::Auto
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StopBody {
    #[schema(min_length = 1, max_length = 15)]
    iface: String,
}

fn iface_name(name: &str) -> Result<(), ApiError> {
    // IFNAMSIZ - 1, no separators: anything else cannot be an interface.
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', '\0'])
        || name.contains(char::is_whitespace)
    {
        return Err(ApiError::BadRequest(format!(
            "{name:?} is not an interface name"
        )));
    }
    Ok(())
}

/// `{"iface": "eth1", "mode": "auto|driver|skb|pcap"}`: starts watching an interface.
#[utoipa::path(
    post,
    path = "/api/capture/start",
    tag = "control",
    description = "Watches an interface (XDP, or libpcap where XDP cannot attach); live only.",
    request_body = StartBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The attachment", body = Object),
        ActionErrors,
    )
)]
pub(super) async fn capture_start(
    State(st): State<Shared>,
    ApiJson(b): ApiJson<StartBody>,
) -> Result<Json<Value>, ApiError> {
    let live = st.live.as_ref().ok_or_else(read_only)?;
    iface_name(&b.iface)?;
    let a = live.control.start(b.iface, b.mode).await?;
    Ok(Json(
        json!({ "attached": a, "capture": live.control.attachments() }),
    ))
}

/// `{"iface": "eth1"}`: stops watching it (XDP detached, or the libpcap capture closed).
#[utoipa::path(
    post,
    path = "/api/capture/stop",
    tag = "control",
    description = "Stops watching an interface; live only.",
    request_body = StopBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The attachment, stopped", body = Object),
        ActionErrors,
    )
)]
pub(super) async fn capture_stop(
    State(st): State<Shared>,
    ApiJson(b): ApiJson<StopBody>,
) -> Result<Json<Value>, ApiError> {
    let live = st.live.as_ref().ok_or_else(read_only)?;
    iface_name(&b.iface)?;
    let a = live.control.stop(b.iface).await?;
    Ok(Json(
        json!({ "detached": a, "capture": live.control.attachments() }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PathBody {
    #[schema(min_length = 1)]
    path: String,
}

/// Resolves a client-supplied path inside the data directory, refusing anything outside it.
pub(super) fn inside_data_dir(data_dir: &Path, rel: &str) -> Result<PathBuf, ApiError> {
    if rel.is_empty() {
        return Err(ApiError::BadRequest(
            "path must name a file inside the data directory".into(),
        ));
    }
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

/// Replays a capture from the data directory into the database, with the loaded config.
#[utoipa::path(
    post,
    path = "/api/replay",
    tag = "control",
    description = "Replays a capture file of the data directory through detection into the database.",
    request_body = PathBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The replay summary: packets, flows, alerts by kind", body = Object),
        ActionErrors,
    )
)]
pub(super) async fn replay(
    State(st): State<Shared>,
    ApiJson(b): ApiJson<PathBody>,
) -> Result<Json<Value>, ApiError> {
    let file = inside_data_dir(&st.data_dir, &b.path)?;
    let slot = job_slot(&st)?;
    let state = st.clone();
    let summary = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let _slot = slot;
        let internal = |e: &dyn std::error::Error| ApiError::Internal(Report(e).to_string());
        let store = Store::open(&state.db, state.config.store).map_err(|e| internal(&e))?;
        let sink = StoreSink::new(&store, "replay", &file.display().to_string(), true)
            .map_err(|e| internal(&e))?;
        let ev = &state.config.evidence;
        let recorder = ev
            .enabled
            .then(|| {
                Recorder::new(
                    ev.clone(),
                    state.data_dir.join("evidence"),
                    store.evidence_prefix(),
                    Window::FromFirstSeen,
                )
            })
            .transpose()
            .map_err(|e| internal(&e))?;
        let s = replay_files(
            std::slice::from_ref(&file),
            ReplayOptions::new(&state.current_config()).with_evidence(recorder),
            vec![Box::new(sink)],
        )
        .map_err(|e| match e {
            ReplayError::BadInput(e) => ApiError::BadRequest(Report(&e).to_string()),
            other => internal(&other),
        })?;
        Ok(json!({
            "packets": s.read.packets,
            "flows": s.flows,
            "evidence_files": s.evidence.map_or(0, |e| e.files),
            "alerts": s.alerts.iter().map(|(k, n)| (k.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        }))
    })
    .await
    .map_err(|e| ApiError::Internal(Report(&e).to_string()))??;
    Ok(Json(summary))
}

/// Training input: a capture in the data directory, or a time range of stored flows.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TrainBody {
    path: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// False-alert budget for the threshold (default: the config's).
    max_alerts_per_hour: Option<f64>,
}

/// Trains the model with the config's `[model]` settings, writes DATA_DIR/model.json, records
/// the version, and (in `sensor run`) swaps it into the running pipeline.
#[utoipa::path(
    post,
    path = "/api/model/train",
    tag = "control",
    description = "Trains a model on a capture of the data directory or a time range of stored flows; live: swapped into the running pipeline.",
    request_body = TrainBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The model: path, threshold, how it was chosen", body = Object),
        ActionErrors,
    )
)]
pub(super) async fn train(
    State(st): State<Shared>,
    ApiJson(b): ApiJson<TrainBody>,
) -> Result<Json<Value>, ApiError> {
    let budget = b.max_alerts_per_hour;
    if let Some(n) = budget
        && !(n.is_finite() && n >= 0.0)
    {
        return Err(ApiError::BadRequest(
            "max_alerts_per_hour must be a number >= 0".into(),
        ));
    }
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
    let slot = job_slot(&st)?;
    let state = st.clone();
    let (model, reply) =
        tokio::task::spawn_blocking(move || -> Result<(Model, Value), ApiError> {
            let _slot = slot;
            let cfg = &state.config;
            let (rows, meta, what) = match source {
                Source::File(file) => {
                    let s = replay_files(
                        std::slice::from_ref(&file),
                        ReplayOptions::new(cfg).collecting(),
                        Vec::new(),
                    )
                    .map_err(|e| ApiError::BadRequest(Report(&e).to_string()))?;
                    (s.features, s.feature_meta, file.display().to_string())
                }
                Source::Range(since, until) => {
                    let c = open_ro(&state.db)
                        .map_err(|e| ApiError::Internal(Report(&e).to_string()))?;
                    let (rows, meta) = q::training_rows(
                        &c,
                        since,
                        until,
                        cfg.rules.port_scan_window_s,
                        cfg.rules.max_tracked,
                    )?;
                    (
                        rows,
                        meta,
                        format!(
                            "stored flows {} .. {}",
                            rfc3339_us(since.max(0) as u64),
                            rfc3339_us(until.max(0) as u64)
                        ),
                    )
                }
            };
            let mut m = Model::train(
                &rows,
                cfg.model.forest(),
                cfg.model.contamination,
                vec![what],
            )
            .map_err(|e| ApiError::BadRequest(Report(&e).to_string()))?;
            m.calibrate(
                &rows,
                &meta,
                budget.or(cfg.model.budget()),
                cfg.rules.quiet_close_s * 1_000_000_000,
            );
            m.save(&out)
                .map_err(|e| ApiError::Internal(Report(&e).to_string()))?;
            let store = Store::open(&state.db, cfg.store)
                .map_err(|e| ApiError::Internal(Report(&e).to_string()))?;
            store
                .model_version(
                    &out.display().to_string(),
                    m.threshold,
                    m.training.flows as u64,
                    serde_json::to_string(&m.training).unwrap_or_default(),
                )
                .and_then(|()| store.sync())
                .map_err(|e| ApiError::Internal(Report(&e).to_string()))?;
            let reply = json!({
                "model": out.display().to_string(),
                "flows": m.training.flows,
                "threshold": m.threshold,
                "threshold_rule": m.threshold_rule,
                "max_alerts_per_hour": m.max_alerts_per_hour,
                "expected_alerts_per_hour": m.expected_alerts_per_hour,
                "threshold_note": m.threshold_note,
            });
            Ok((m, reply))
        })
        .await
        .map_err(|e| ApiError::Internal(Report(&e).to_string()))??;
    let mut reply = reply;
    let loaded = match &st.live {
        Some(live) => {
            let path = reply["model"].as_str().map(str::to_owned);
            live.control.set_model(Some(model), path).await?;
            true
        }
        None => false,
    };
    reply["loaded"] = json!(loaded);
    Ok(Json(reply))
}
