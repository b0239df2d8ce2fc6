//! Prometheus text exposition: stored totals, and in `sensor run` the live loop's, the
//! kernel's and the outputs' counters.

use std::fmt::Write as _;

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};

use super::{ApiError, Shared, read};
use crate::{record::AlertKind, sink::store::read as q};

/// One metric family with a single sample.
fn family(out: &mut String, name: &str, help: &str, kind: &str, v: u64) {
    let _ignored = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
    );
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "read",
    description = "Prometheus text exposition: stored totals and, live, every counter the sensor's parts declare.",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain; version=0.0.4", body = String),
    )
)]
pub(super) async fn metrics(State(st): State<Shared>) -> Result<Response, ApiError> {
    // The stored totals need the database; the live counters do not, so a database that is
    // locked or gone leaves the scrape with those (and `sensor_db_readable 0`).
    let stored = read(&st, |c| Ok(q::metric_totals(c)?)).await;
    let mut out = String::new();
    family(
        &mut out,
        "sensor_db_readable",
        "1 when this scrape could read the stored totals from the database.",
        "gauge",
        u64::from(stored.is_ok()),
    );
    if let Ok(t) = stored {
        stored_totals(&mut out, &t);
    }
    family(
        &mut out,
        "sensor_api_connections_refused_total",
        "API connections closed at accept: the connection cap was reached.",
        "counter",
        super::REFUSED_CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed),
    );
    live_metrics(&mut out, &st);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

fn stored_totals(out: &mut String, t: &q::MetricTotals) {
    let (packets, bytes, flows, kinds) = (t.packets, t.bytes, t.flows, &t.alerts);
    family(
        out,
        "sensor_packets_total",
        "Packets counted.",
        "counter",
        packets.max(0) as u64,
    );
    family(
        out,
        "sensor_bytes_total",
        "Bytes counted.",
        "counter",
        bytes.max(0) as u64,
    );
    family(
        out,
        "sensor_flows_total",
        "Finished flows stored.",
        "counter",
        flows.max(0) as u64,
    );
    out.push_str(
        "# HELP sensor_alerts_total Alerts by kind.\n# TYPE sensor_alerts_total counter\n",
    );
    for k in AlertKind::ALL {
        let n = kinds
            .iter()
            .find(|(kind, _)| kind == k.as_str())
            .map_or(0, |(_, n)| *n);
        let _ignored = writeln!(out, "sensor_alerts_total{{kind=\"{}\"}} {n}", k.as_str());
    }
}

/// The counters `sensor run` keeps in memory: each part of the running sensor declared its own.
fn live_metrics(out: &mut String, st: &Shared) {
    if let Some(live) = &st.live {
        live.metrics.render(out);
    }
}
