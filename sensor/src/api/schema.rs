//! The API's document: the OpenAPI 3.1 description served at `/api/openapi.json`, built from
//! the handlers' own annotations and types (utoipa), and the shapes of the JSON the read
//! endpoints assemble from stored rows.
//!
//! The rows are the records of [`crate::record`] (an alert, a flow) stored as JSON and given
//! their row id; the shapes below name them as the records' own schemas, so a field added to a
//! record is in the document without an edit here. `cargo xtask test` checks every documented
//! response of a running `sensor serve` against this document (schemathesis).

use std::collections::BTreeMap;

use utoipa::{
    IntoResponses, Modify, OpenApi, ToSchema,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::record::{AlertRecord, FlowRecord};

/// Every error: a status and one sentence.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// What was wrong, or what to do; internal causes are logged, never sent.
    pub error: String,
}

/// What a read can answer besides its data.
#[derive(IntoResponses)]
pub enum ReadErrors {
    #[response(status = 400, description = "A parameter is not valid")]
    BadRequest(ErrorBody),
    #[response(
        status = 503,
        description = "The database is locked or cannot be read now"
    )]
    Unavailable(ErrorBody),
}

/// What an action (a control route with a body) can answer besides its result.
#[derive(IntoResponses)]
pub enum ActionErrors {
    #[response(status = 400, description = "The request is not valid")]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "Missing or wrong bearer token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "Not allowed here: a path outside the data directory, an address on the \
                       allowlist, a capability the sensor lacks"
    )]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "No such interface, file or entry")]
    NotFound(ErrorBody),
    #[response(
        status = 409,
        description = "Not possible now: read-only server (sensor serve), a job running, \
                       already watched, the blocklist full"
    )]
    Conflict(ErrorBody),
    #[response(status = 415, description = "The body is not JSON")]
    UnsupportedMediaType(ErrorBody),
    #[response(status = 500, description = "Internal error (logged)")]
    Internal(ErrorBody),
    #[response(
        status = 503,
        description = "The live loop or the database is not available now"
    )]
    Unavailable(ErrorBody),
}

/// An alert as stored: its record with the row id (`id`, the one the other endpoints take)
/// and, for an attack whose small flows were summed, their totals.
#[derive(ToSchema)]
pub struct AlertItem {
    #[serde(flatten)]
    pub record: AlertRecord,
    /// The stored alert's row id (replaces the run-local id of the record).
    pub id: i64,
    pub flows_summed: Option<FlowsSummed>,
}

/// An attack's small flows summed into its alert instead of a row each.
#[derive(ToSchema)]
pub struct FlowsSummed {
    pub flows: i64,
    pub packets: i64,
    pub bytes: i64,
}

/// A stored flow: its record with the row id.
#[derive(ToSchema)]
pub struct FlowItem {
    #[serde(flatten)]
    pub record: FlowRecord,
    pub id: i64,
}

/// A model anomaly: the flow (the forest's) or the flow event (the online model's), the
/// features that made it stand out, and the verdict.
#[derive(ToSchema)]
pub struct AnomalyItem {
    pub id: i64,
    /// `kitnet` for the online model; absent for the forest.
    pub model: Option<String>,
    #[schema(value_type = Object)]
    pub flow: serde_json::Value,
    #[schema(value_type = Vec<Object>)]
    pub top_features: Vec<serde_json::Value>,
    pub score: f64,
    pub severity: String,
    pub threshold: f64,
}

/// Where the next page starts: a row id (time order) or `SCORE_ID` (score order).
#[derive(ToSchema)]
#[serde(untagged)]
pub enum Cursor {
    Id(i64),
    Score(String),
}

/// A page of alerts, newest (or highest scored) first.
#[derive(ToSchema)]
pub struct AlertPage {
    pub items: Vec<AlertItem>,
    /// Absent on the last page.
    pub next_cursor: Option<Cursor>,
}

#[derive(ToSchema)]
pub struct FlowPage {
    pub items: Vec<FlowItem>,
    pub next_cursor: Option<Cursor>,
}

#[derive(ToSchema)]
pub struct AnomalyPage {
    pub items: Vec<AnomalyItem>,
    pub next_cursor: Option<Cursor>,
}

/// One alert with what it is investigated by.
#[derive(ToSchema)]
pub struct AlertDetail {
    pub alert: AlertItem,
    pub timeline: Timeline,
    /// The alert's flows (its pair's for a scan), oldest first, at most 500.
    pub flows: Vec<FlowItem>,
    pub anomalies: Vec<AnomalyItem>,
    /// Mitigation audit rows of this alert.
    #[schema(value_type = Vec<Object>)]
    pub mitigations: Vec<serde_json::Value>,
    /// Alerts merged into this one.
    pub merged: Vec<AlertItem>,
}

/// Packets of the alert's traffic per bucket.
#[derive(ToSchema)]
pub struct Timeline {
    pub bucket_s: i64,
    pub points: Vec<TimelinePoint>,
}

#[derive(ToSchema)]
pub struct TimelinePoint {
    /// Bucket start, ns since the epoch.
    pub ts: i64,
    pub packets: i64,
}

/// Sources by bytes sent.
#[derive(ToSchema)]
pub struct TopTalkers {
    pub items: Vec<Talker>,
}

#[derive(ToSchema)]
pub struct Talker {
    pub ip: String,
    pub bytes: i64,
    pub packets: i64,
    pub flows: i64,
    /// Country and AS (`[geo]`), when known.
    pub origin: Option<crate::geo::Origin>,
}

/// Sources of attack alerts, worst first.
#[derive(ToSchema)]
pub struct SuspiciousIps {
    pub items: Vec<Suspicious>,
}

#[derive(ToSchema)]
pub struct Suspicious {
    pub ip: String,
    pub alerts: i64,
    pub kinds: Vec<String>,
    pub max_severity: String,
    pub last_seen: String,
    /// Country and AS (`[geo]`), when known.
    pub origin: Option<crate::geo::Origin>,
}

/// Where attacks came from: alerts by their remote side's country and AS.
#[derive(ToSchema)]
pub struct Origins {
    pub countries: Vec<OriginCount>,
    pub asns: Vec<OriginCount>,
    /// Alerts in the range whose remote side is not in the databases (or none is loaded).
    pub unknown: i64,
}

#[derive(ToSchema)]
pub struct OriginCount {
    /// ISO country code, or AS number (as text).
    pub key: String,
    /// The AS's organisation (ASNs only).
    pub name: Option<String>,
    pub alerts: i64,
    /// Distinct remote addresses.
    pub sources: i64,
}

/// Totals, protocols, alerts by kind and time series over the range asked for.
#[derive(ToSchema)]
pub struct Stats {
    pub totals: StatsTotals,
    pub protocols: Protocols,
    pub alerts_by_kind: BTreeMap<String, i64>,
    pub series: Vec<SeriesPoint>,
    pub alert_series: Vec<AlertSeriesPoint>,
}

#[derive(ToSchema)]
pub struct StatsTotals {
    pub packets: i64,
    pub bytes: i64,
    /// Stored flows plus the small flows summed into attack alerts.
    pub flows: i64,
    pub flows_summed: i64,
    pub alerts: i64,
    pub anomalies: i64,
}

/// Packets per protocol.
#[derive(ToSchema)]
pub struct Protocols {
    pub tcp: i64,
    pub udp: i64,
    pub icmp: i64,
    pub other: i64,
}

#[derive(ToSchema)]
pub struct SeriesPoint {
    pub ts: String,
    pub packets: i64,
    pub bytes: i64,
    pub pps: f64,
}

#[derive(ToSchema)]
pub struct AlertSeriesPoint {
    pub ts: String,
    pub kind: String,
    pub count: i64,
}

/// The bearer token the control routes need (`DATA_DIR/api-token` or `--token`).
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        api.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// The document's frame; the paths come from the router (`utoipa_axum`), so a route cannot
/// be served without being described.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gateway sensor API",
        description = "Alerts, flows, anomalies, statistics and status of the sensor, and \
                       (with the bearer token) capture control, replay, training and the \
                       mitigation blocklist. Times are RFC 3339 in UTC unless a field says ns.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorBody, super::read::Sort, super::read::SeverityFilter)),
    modifiers(&BearerToken)
)]
pub struct ApiDoc;
