//! Prometheus text exposition: stored totals, and in `sensor run` the live loop's, the
//! kernel's and the outputs' counters.

use std::{fmt::Write as _, sync::atomic::Ordering};

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

/// The counters `sensor run` keeps in memory: the loop's, the kernel's, the outputs'.
fn live_metrics(out: &mut String, st: &Shared) {
    if let Some(live) = &st.live {
        let m = &live.metrics;
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
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
                "sensor_xdp_blocked_packets_total",
                "Packets the XDP blocklist dropped.",
                "counter",
                g(&m.blocked_packets),
            ),
            (
                "sensor_xdp_blocked_bytes_total",
                "Bytes the XDP blocklist dropped.",
                "counter",
                g(&m.blocked_bytes),
            ),
            (
                "sensor_xdp_rate_limited_packets_total",
                "Packets the XDP per-destination rate limits dropped.",
                "counter",
                g(&m.rate_limited_packets),
            ),
            (
                "sensor_xdp_rate_limited_bytes_total",
                "Bytes the XDP per-destination rate limits dropped.",
                "counter",
                g(&m.rate_limited_bytes),
            ),
            (
                "sensor_blocklist_entries",
                "Blocked source prefixes in force.",
                "gauge",
                g(&m.block_entries),
            ),
            (
                "sensor_rate_limit_entries",
                "Per-destination rate limits in force.",
                "gauge",
                g(&m.rate_limit_entries),
            ),
            (
                "sensor_evidence_copied_packets_total",
                "Packets the XDP program copied for alert evidence.",
                "counter",
                g(&m.evidence_copied),
            ),
            (
                "sensor_evidence_lost_packets_total",
                "Evidence packets lost: the kernel ring buffer was full.",
                "counter",
                g(&m.evidence_lost),
            ),
            (
                "sensor_evidence_written_packets_total",
                "Packets written to alert pcap files.",
                "counter",
                g(&m.evidence_packets),
            ),
            (
                "sensor_evidence_written_bytes_total",
                "Bytes written to alert pcap files.",
                "counter",
                g(&m.evidence_bytes),
            ),
            (
                "sensor_evidence_skipped_packets_total",
                "Packets of recorded alerts the kernel did not copy: their budget was spent.",
                "counter",
                g(&m.evidence_skipped),
            ),
            (
                "sensor_evidence_cut_short_total",
                "Alert pcap files cut short by the per-alert packet or byte budget.",
                "counter",
                g(&m.evidence_cut_short),
            ),
            (
                "sensor_evidence_recordings",
                "Alerts whose packets are being recorded.",
                "gauge",
                g(&m.evidence_recording),
            ),
            (
                "sensor_evidence_files_total",
                "Alert pcap files written.",
                "counter",
                g(&m.evidence_files),
            ),
            (
                "sensor_evidence_refused_total",
                "Alerts not recorded: evidence.max_open recordings were running.",
                "counter",
                g(&m.evidence_refused),
            ),
            (
                "sensor_evidence_rotated_files_total",
                "Old evidence files deleted to stay under evidence.total_bytes.",
                "counter",
                g(&m.evidence_rotated),
            ),
            (
                "sensor_evidence_errors_total",
                "Evidence files that could not be created or written.",
                "counter",
                g(&m.evidence_errors),
            ),
            (
                "sensor_pcap_packets_total",
                "Packets the libpcap captures delivered.",
                "counter",
                g(&m.pcap_packets),
            ),
            (
                "sensor_poll_latency_microseconds",
                "Duration of the last map poll.",
                "gauge",
                g(&m.poll_latency_us),
            ),
            (
                "sensor_poll_cycle_microseconds",
                "Duration of the last poll cycle: maps drained, then detection and sinks.",
                "gauge",
                g(&m.poll_cycle_us),
            ),
            (
                "sensor_poll_cycle_max_microseconds",
                "Longest poll cycle since start.",
                "gauge",
                g(&m.poll_cycle_max_us),
            ),
            (
                "sensor_polls_late_total",
                "Poll cycles longer than the poll interval (detection fell behind).",
                "counter",
                g(&m.polls_late),
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
                "Rows lost: refused by the full queue, or beyond what is held in memory while the database fails.",
                "counter",
                g(&m.db_dropped),
            ),
            (
                "sensor_alerts_raised_total",
                "Alerts opened since start (counted in memory, stored or not).",
                "counter",
                g(&m.alerts_raised),
            ),
            (
                "sensor_db_failing",
                "1 while the database does not take writes (rows are held in memory and retried).",
                "gauge",
                g(&m.db_failing),
            ),
            (
                "sensor_db_pending_rows",
                "Rows held in memory because the database failed.",
                "gauge",
                g(&m.db_pending),
            ),
            (
                "sensor_db_write_errors_total",
                "Failed database commits (each retry counts).",
                "counter",
                g(&m.db_errors),
            ),
            (
                "sensor_sink_errors_total",
                "Records an output failed to take.",
                "counter",
                g(&m.sink_errors),
            ),
            (
                "sensor_anomalies_dropped_total",
                "Anomalies not kept: the detector's buffer was full.",
                "counter",
                g(&m.anomalies_dropped),
            ),
            (
                "sensor_anomalies_folded_total",
                "Model anomalies inside an attack a rule alert reports, counted into that alert without a row of their own.",
                "counter",
                g(&m.anomalies_folded),
            ),
            (
                "sensor_flows_summed_total",
                "Small flows of an attack a rule alert reports, past its first 1000 rows of them, summed into the alert's attack_flows rows instead of a row each.",
                "counter",
                g(&m.flows_summed),
            ),
            (
                "sensor_alerts_suppressed_total",
                "Firings that could not open an alert: too many open.",
                "counter",
                g(&m.alerts_suppressed),
            ),
            (
                "sensor_rules_untracked_total",
                "New keys the rules did not track: a tracker was full.",
                "counter",
                g(&m.rules_untracked),
            ),
            (
                "sensor_attached_interfaces",
                "Interfaces watched now.",
                "gauge",
                live.control.attachments().len() as u64,
            ),
        ] {
            family(out, name, help, kind, v);
        }
        if let Some(w) = &live.webhook {
            for (name, help, v) in [
                (
                    "sensor_webhook_sent_total",
                    "Alerts the webhook delivered.",
                    g(&w.sent),
                ),
                (
                    "sensor_webhook_retries_total",
                    "Webhook delivery retries.",
                    g(&w.retries),
                ),
                (
                    "sensor_webhook_failed_total",
                    "Alerts the webhook gave up on after every attempt.",
                    g(&w.failed),
                ),
                (
                    "sensor_webhook_dropped_total",
                    "Alerts the full webhook queue refused.",
                    g(&w.dropped),
                ),
            ] {
                family(out, name, help, "counter", v);
            }
        }
        if let Some(s) = &live.syslog {
            for (name, help, v) in [
                (
                    "sensor_syslog_sent_total",
                    "Alerts sent to the syslog collector.",
                    g(&s.sent),
                ),
                (
                    "sensor_syslog_dropped_total",
                    "Alerts not sent: queue full or the collector failed.",
                    g(&s.dropped),
                ),
                (
                    "sensor_syslog_errors_total",
                    "Syslog send failures.",
                    g(&s.errors),
                ),
            ] {
                family(out, name, help, "counter", v);
            }
        }
        if let Some(e) = &live.email {
            for (name, help, v) in [
                (
                    "sensor_email_mails_total",
                    "Alert mails the relay accepted.",
                    g(&e.mails),
                ),
                (
                    "sensor_email_alerts_total",
                    "Alerts in those mails.",
                    g(&e.alerts),
                ),
                (
                    "sensor_email_dropped_total",
                    "Alerts not mailed: queue full or the relay failed.",
                    g(&e.dropped),
                ),
                (
                    "sensor_email_errors_total",
                    "Failed mail deliveries.",
                    g(&e.errors),
                ),
            ] {
                family(out, name, help, "counter", v);
            }
        }
        if let Some(x) = &live.ipfix {
            for (name, help, v) in [
                (
                    "sensor_ipfix_records_total",
                    "IPFIX data records sent.",
                    g(&x.records),
                ),
                (
                    "sensor_ipfix_messages_total",
                    "IPFIX messages sent.",
                    g(&x.messages),
                ),
                (
                    "sensor_ipfix_dropped_total",
                    "IPFIX records not sent: queue full or the collector failed.",
                    g(&x.dropped),
                ),
                (
                    "sensor_ipfix_errors_total",
                    "IPFIX send failures.",
                    g(&x.errors),
                ),
            ] {
                family(out, name, help, "counter", v);
            }
        }
        if let Some(e) = &live.eve {
            for (name, help, v) in [
                (
                    "sensor_eve_events_total",
                    "EVE JSON events written.",
                    g(&e.events),
                ),
                (
                    "sensor_eve_dropped_total",
                    "EVE JSON events not written: queue full or the file failed.",
                    g(&e.dropped),
                ),
                (
                    "sensor_eve_rotations_total",
                    "EVE JSON file rotations.",
                    g(&e.rotations),
                ),
                (
                    "sensor_eve_errors_total",
                    "EVE JSON write failures.",
                    g(&e.errors),
                ),
            ] {
                family(out, name, help, "counter", v);
            }
        }
    }
}
