//! The one pipeline: flow events and finished flows in; rules, the model, per-second
//! statistics and every output out. Replay, the XDP poll loop and the libpcap live loop all
//! drive this same type, so an alert, an anomaly or a statistics row means the same thing on
//! every path (docs/DESIGN.md, "One pipeline").
//!
//! Time is the data's: packet timestamps in replay and live libpcap, kernel timestamps (turned
//! into Unix time) on the XDP path. The caller owns the flow table and hands it in, because the
//! XDP poller merges kernel deltas into it directly.

pub mod attack_flows;

use std::collections::BTreeMap;

use sensor_common::{GlobalCounters, HostKey, HostStats};

use crate::{
    detect::{AlertKind, DetectMetrics, Detector, alert::Alert, ml::model::Model},
    evidence::Recorder,
    flow::{Flow, FlowTable},
    history::Record,
    metrics::{Counter, Registry},
    mitigate::MitigationEvent,
    packet::Parsed,
    record::{FlowRecord, StatsRow},
    sink::{EndTotals, Sink, SinkError},
};

const NS: u64 = 1_000_000_000;
/// Pending flow events that make the rules run before their second is over (a second of a
/// million busy flows stays bounded).
const MAX_PENDING_EVENTS: usize = 1 << 16;

/// What went through the pipeline so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Packets counted into the statistics (parsed packets on the pcap paths, every packet the
    /// kernel saw on the XDP path).
    pub packets: u64,
    pub flows: u64,
    /// Alerts opened, by kind.
    pub alerts: BTreeMap<AlertKind, u64>,
    pub anomalies: u64,
    /// Records a sink failed to take (the first error is kept for the caller).
    pub sink_errors: u64,
}

/// Alerts that opened and closed, for what acts on them beside the sinks (mitigation).
#[derive(Debug, Default)]
pub struct AlertChanges {
    pub opened: Vec<Alert>,
    /// Open alerts whose figures changed (at most once a data second each).
    pub updated: Vec<Alert>,
    pub closed: Vec<Alert>,
}

/// Flow table output through detection into the sinks.
pub struct Pipeline<'a> {
    detector: Option<Detector>,
    sinks: Vec<Box<dyn Sink + 'a>>,
    wants_flows: bool,
    wants_stats: bool,
    /// The second being counted; written once a later second starts.
    second: StatsRow,
    /// Flows the table finished, waiting for `process`.
    finished: Vec<Flow>,
    totals: Totals,
    first_error: Option<SinkError>,
    /// Kept only once asked for ([`Pipeline::tap_alerts`]).
    tap: Option<AlertChanges>,
    /// Names and records each alert's evidence file, when evidence is on.
    evidence: Option<Recorder>,
    /// An attack's small flows past its alert's first rows, summed for the sinks that store.
    attack_sums: attack_flows::AttackSums,
    /// Published at each tick, once asked for ([`Pipeline::publish_metrics`]).
    metrics: Option<PipelineMetrics>,
    /// Every call into the rules, kept for dry runs of rule changes (`[history]`).
    history: Option<crate::history::Writer>,
}

/// The pipeline's and its detector's counters on `/metrics`.
struct PipelineMetrics {
    alerts_raised: Counter,
    sink_errors: Counter,
    detect: DetectMetrics,
}

impl<'a> Pipeline<'a> {
    /// `detector` None runs flows only (no rules, no model).
    pub fn new(detector: Option<Detector>, sinks: Vec<Box<dyn Sink + 'a>>) -> Self {
        let wants_flows = sinks.iter().any(|s| s.wants_flows());
        let wants_stats = sinks.iter().any(|s| s.wants_stats());
        Self {
            detector,
            sinks,
            wants_flows,
            wants_stats,
            second: StatsRow::default(),
            finished: Vec::new(),
            totals: Totals::default(),
            first_error: None,
            tap: None,
            evidence: None,
            attack_sums: attack_flows::AttackSums::default(),
            metrics: None,
            history: None,
        }
    }

    /// Keeps every call into the rules in `h` from now on (with a detector only).
    pub fn set_history(&mut self, h: crate::history::Writer) {
        if self.detector.is_some() {
            self.history = Some(h);
        }
    }

    /// From now on, publishes its counters into `m` at each tick (live).
    pub fn publish_metrics(&mut self, m: &Registry) {
        self.metrics = Some(PipelineMetrics {
            alerts_raised: m.counter(
                "sensor_alerts_raised_total",
                "Alerts opened since start (counted in memory, stored or not).",
            ),
            sink_errors: m.counter(
                "sensor_sink_errors_total",
                "Records an output failed to take.",
            ),
            detect: DetectMetrics::new(m),
        });
    }

    /// From now on, keeps the alerts that open and close for [`Pipeline::take_alert_changes`].
    pub fn tap_alerts(&mut self) {
        self.tap.get_or_insert_default();
    }

    /// Alerts opened and closed since the last call (empty unless tapped).
    pub fn take_alert_changes(&mut self) -> AlertChanges {
        self.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Records alerts' packets with `rec`: every alert it takes names its file in its record.
    pub fn set_recorder(&mut self, rec: Recorder) {
        self.evidence = Some(rec);
    }

    pub fn recorder_mut(&mut self) -> Option<&mut Recorder> {
        self.evidence.as_mut()
    }

    /// The recorder back (replay runs its second pass once the detection pass is over).
    pub fn take_recorder(&mut self) -> Option<Recorder> {
        self.evidence.take()
    }

    /// A mitigation event to every sink (the store's audit log, the log).
    pub fn mitigation(&mut self, e: &MitigationEvent) {
        for s in &mut self.sinks {
            if let Err(err) = s.mitigation(e) {
                self.totals.sink_errors += 1;
                self.first_error.get_or_insert(err);
            }
        }
    }

    pub fn detector(&self) -> Option<&Detector> {
        self.detector.as_ref()
    }

    pub fn detector_mut(&mut self) -> Option<&mut Detector> {
        self.detector.as_mut()
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Replaces the model in the running pipeline (training from the dashboard).
    pub fn set_model(&mut self, model: Option<Model>) {
        if let Some(d) = &mut self.detector {
            d.set_model(model);
        }
    }

    /// Replaces the rules in the running pipeline (see [`Detector::set_rules`]).
    pub fn set_rules(&mut self, rules: crate::detect::RuleConfig) {
        if let Some(d) = &mut self.detector {
            d.set_rules(rules);
        }
    }

    /// Writes out the rules history held in memory.
    pub fn flush_history(&mut self) {
        if let Some(w) = &mut self.history {
            w.flush();
        }
    }

    /// A change of the rules to every sink (the store's audit table, the log).
    pub fn rule_change(&mut self, c: &crate::ruleset::RuleChange) {
        for s in &mut self.sinks {
            if let Err(err) = s.rule_change(c) {
                self.totals.sink_errors += 1;
                self.first_error.get_or_insert(err);
            }
        }
    }

    /// The first error a sink returned since the last call (live paths log it and go on; replay
    /// fails with it at the end).
    pub fn take_error(&mut self) -> Option<SinkError> {
        self.first_error.take()
    }

    /// Where the table puts the flows it finishes; `process` takes them from here.
    pub fn finished(&mut self) -> &mut Vec<Flow> {
        &mut self.finished
    }

    /// Packets parsed in userspace (replay, live libpcap): counted into the statistics, added to
    /// the table, and processed.
    pub fn packets(&mut self, table: &mut FlowTable, batch: &[(Parsed, u32, u64)]) {
        self.totals.packets += batch.len() as u64;
        if self.wants_stats {
            for (p, len, ts) in batch {
                self.at(*ts).count(p.key.proto, *len);
            }
        }
        let finished = &mut self.finished;
        table.packets(batch, &mut |f| finished.push(f));
        // Events wait until their second is over (the table merges each flow's packets of one
        // second into one event) or until there are many: the rules see the same counts with
        // a fraction of the calls.
        // Finished flows wait with them: a flow reaches the model after the rules (and the
        // online model) have seen its last packets.
        let now_s = batch.last().map_or(0, |(_, _, ts)| ts / NS);
        let due = !table.records_events()
            || table.pending_events() >= MAX_PENDING_EVENTS
            || self.finished.len() >= MAX_PENDING_EVENTS
            || table.pending_since_s().is_some_and(|s| s != now_s);
        if due {
            self.process(table);
        }
    }

    /// The kernel's counters of one poll (XDP path), counted into the second of `now_ns`.
    pub fn kernel_counters(&mut self, now_ns: u64, delta: &GlobalCounters) {
        self.totals.packets += delta.packets;
        if self.wants_stats {
            self.at(now_ns).add_counters(delta);
        }
    }

    /// Per-destination counters of packets the kernel's flow map could not take.
    pub fn overflow(&mut self, now_ns: u64, dst: &[(HostKey, HostStats)]) {
        if let Some(d) = &mut self.detector {
            for (k, h) in dst {
                if let Some(w) = &mut self.history {
                    w.put(&Record::Overflow {
                        ts_ns: now_ns,
                        key: *k,
                        stats: *h,
                    });
                }
                d.on_overflow(now_ns, k, h);
            }
        }
        self.emit_detections();
    }

    /// Data time moved on to `now_ns` without traffic: quiet alerts close.
    pub fn tick(&mut self, now_ns: u64) {
        if let Some(d) = &mut self.detector {
            if let Some(w) = &mut self.history {
                w.put(&Record::Tick(now_ns));
            }
            d.tick(now_ns);
            d.settle();
        }
        self.emit_detections();
        for s in &mut self.sinks {
            if let Err(e) = s.tick() {
                self.totals.sink_errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
        if let Some(m) = &self.metrics {
            m.alerts_raised.set_total(self.totals.alerts.values().sum());
            m.sink_errors.set_total(self.totals.sink_errors);
            if let Some(d) = &self.detector {
                m.detect.publish(d);
            }
        }
    }

    /// Table events to the rules, finished flows to the model and the sinks, then whatever
    /// detection opened, closed or judged.
    pub fn process(&mut self, table: &mut FlowTable) {
        if let Some(d) = &mut self.detector {
            match &mut self.history {
                Some(w) => {
                    for ev in table.take_events() {
                        w.put(&Record::Event(ev));
                        d.on_event(&ev);
                    }
                    w.put(&Record::Settle);
                }
                None => {
                    for ev in table.take_events() {
                        d.on_event(&ev);
                    }
                }
            }
            d.settle();
        }
        self.finished_flows();
    }

    /// Finished flows to the model and the sinks, then whatever detection opened, closed or
    /// judged.
    fn finished_flows(&mut self) {
        let finished = std::mem::take(&mut self.finished);
        if self.wants_stats && !finished.is_empty() {
            self.second.flows += finished.len() as u64;
        }
        for f in &finished {
            self.flow(f);
        }
        self.finished = finished;
        self.finished.clear();
        self.emit_detections();
    }

    /// End of the data (end of a replay, shutdown): every flow the table holds is finished,
    /// every alert closed, the last second written, the sinks flushed. Returns the totals, or
    /// the first error a sink returned.
    pub fn finish(&mut self, table: &mut FlowTable) -> Result<Totals, SinkError> {
        self.process(table);
        let mut held = Vec::new();
        table.flush(&mut |f| held.push(f));
        if self.wants_stats {
            self.second.flows += held.len() as u64;
        }
        for f in &held {
            self.flow(f);
        }
        if let Some(d) = &mut self.detector {
            if let Some(w) = &mut self.history {
                w.put(&Record::End);
                w.sync();
            }
            d.flush();
        }
        self.emit_detections();
        self.write_second();
        let rows = self.attack_sums.take();
        self.attack_rows(&rows);
        let end = EndTotals {
            packets: self.totals.packets,
            flows: self.totals.flows,
        };
        for s in &mut self.sinks {
            if let Err(e) = s.finish(end) {
                self.totals.sink_errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
        match self.first_error.take() {
            Some(e) => Err(e),
            None => Ok(self.totals.clone()),
        }
    }

    fn flow(&mut self, f: &Flow) {
        self.totals.flows += 1;
        if let Some(w) = &mut self.history {
            w.put(&Record::Flow(f.facts()));
        }
        let verdict = self.detector.as_mut().and_then(|d| d.on_flow(f));
        if !self.wants_flows {
            return;
        }
        let mut rec = FlowRecord::from(f);
        if let Some(v) = verdict {
            rec.score = Some((v.score * 10_000.0).round() / 10_000.0);
            rec.anomalous = Some(v.anomalous);
        }
        let attack = self.detector.as_mut().and_then(|d| d.attack_flow(f));
        let done = self.attack_sums.advance(f.last_seen_ns);
        self.attack_rows(&done);
        if let Some(alert) = attack {
            self.attack_sums.add(&rec, f.last_seen_ns, alert);
        }
        for s in &mut self.sinks {
            if !s.wants_flows() {
                continue;
            }
            let r = match attack {
                Some(_) => s.summed_flow(&rec, f.last_seen_ns),
                None => s.flow(&rec, f.last_seen_ns),
            };
            if let Err(e) = r {
                self.totals.sink_errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Finished attack-flow rows to the sinks that store rows.
    fn attack_rows(&mut self, rows: &[crate::record::AttackFlowRow]) {
        for row in rows {
            for s in &mut self.sinks {
                if let Err(e) = s.attack_flows(row) {
                    self.totals.sink_errors += 1;
                    self.first_error.get_or_insert(e);
                }
            }
        }
    }

    /// Alerts opened and closed, anomalies judged: to every sink, in that order.
    fn emit_detections(&mut self) {
        let Some(d) = &mut self.detector else { return };
        let opened = d.book.take_opened();
        let updated = d.book.take_updated();
        let closed = d.book.take_closed();
        let anomalies = d.take_anomalies();
        let mut fail = |e: SinkError, totals: &mut Totals| {
            totals.sink_errors += 1;
            self.first_error.get_or_insert(e);
        };
        for a in &opened {
            *self.totals.alerts.entry(a.kind).or_default() += 1;
            let mut rec = d.record(a);
            rec.pcap = self.evidence.as_mut().and_then(|e| e.alert_opened(a));
            for s in &mut self.sinks {
                if let Err(e) = s.alert_opened(&rec, a.last_seen_ns) {
                    fail(e, &mut self.totals);
                }
            }
        }
        for a in &updated {
            let mut rec = d.record(a);
            rec.pcap = self.evidence.as_ref().and_then(|e| e.file_of(a.id));
            for s in &mut self.sinks {
                if let Err(e) = s.alert_updated(&rec, a.last_seen_ns) {
                    fail(e, &mut self.totals);
                }
            }
        }
        for a in &closed {
            let mut rec = d.record(a);
            rec.pcap = self.evidence.as_mut().and_then(|e| e.alert_closed(a.id));
            for s in &mut self.sinks {
                if let Err(e) = s.alert_closed(&rec, a.last_seen_ns) {
                    fail(e, &mut self.totals);
                }
            }
        }
        for an in &anomalies {
            self.totals.anomalies += 1;
            for s in &mut self.sinks {
                if let Err(e) = s.anomaly(an) {
                    fail(e, &mut self.totals);
                }
            }
        }
        if let Some(t) = &mut self.tap {
            t.opened.extend(opened);
            t.updated.extend(updated);
            t.closed.extend(closed);
        }
    }

    /// The statistics row of the second holding `ts_ns`; the previous one is written once it
    /// has ended, so a row never claims more time than it covers.
    fn at(&mut self, ts_ns: u64) -> &mut StatsRow {
        let sec = ts_ns / NS * NS;
        if sec != self.second.ts {
            self.write_second();
            self.second.ts = sec;
        }
        &mut self.second
    }

    /// Writes the current row (if it counted anything) and empties it.
    fn write_second(&mut self) {
        let ts = self.second.ts;
        let row = std::mem::replace(
            &mut self.second,
            StatsRow {
                ts,
                seconds: 1,
                ..StatsRow::default()
            },
        );
        if row.packets == 0 && row.flows == 0 {
            return;
        }
        let row = StatsRow { seconds: 1, ..row };
        for s in &mut self.sinks {
            if s.wants_stats()
                && let Err(e) = s.stats(&row)
            {
                self.totals.sink_errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use sensor_common::{FlowKey, family, proto};

    use super::*;
    use crate::{
        detect::{RuleConfig, alert::ATTACK_FLOW_ROWS},
        flow::FlowConfig,
        packet::tcp,
        sink::store::{Retention, Store, StoreSink, open_ro},
    };

    const S: u64 = NS;

    fn syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, flags: u8, ts: u64) -> (Parsed, u32, u64) {
        let key = FlowKey {
            src_addr: src.to_ipv6_mapped().octets(),
            dst_addr: dst.to_ipv6_mapped().octets(),
            src_port: sport,
            dst_port: 80,
            proto: proto::TCP,
            family: family::IPV4,
            _pad: [0; 2],
        };
        let p = Parsed {
            key,
            tcp_flags: flags,
            echo: false,
            fragment: false,
        };
        (p, 60, ts)
    }

    /// A forged-source SYN flood stores its first rows and sums the rest into its alert, also
    /// for the flows that finish after the alert closed; a conversation with the victim during
    /// the flood and a probe after it keep rows of their own; nothing is lost in the sum.
    #[test]
    fn a_flood_keeps_its_first_flows_as_rows_and_sums_the_rest_into_its_alert() {
        let dir =
            std::env::temp_dir().join(format!("sensor-pipeline-{}-attack", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&dir);
        let db = dir.join("sensor.db");
        let store = Store::open(&db, Retention::default()).expect("open");
        let victim = Ipv4Addr::new(10, 9, 9, 9);
        let client = Ipv4Addr::new(10, 1, 1, 1);
        let late = Ipv4Addr::new(10, 1, 1, 2);
        const FORGED: u32 = 40_000;
        {
            let sink = StoreSink::new(&store, "replay", "test", true).expect("session");
            let mut pipe = Pipeline::new(
                Some(Detector::new(RuleConfig::default())),
                vec![Box::new(sink)],
            );
            let mut table = FlowTable::new(FlowConfig::default());
            table.record_events(true);
            let mut batch = Vec::new();
            for i in 0..FORGED {
                let src = Ipv4Addr::from(0xc000_0000 ^ i.wrapping_mul(2_654_435_761));
                let ts = 100 * S + u64::from(i) * 100_000;
                batch.push(syn(src, victim, 1024 + (i % 60_000) as u16, tcp::SYN, ts));
                // A client's 20-packet conversation with the victim in the middle of it.
                if i % 1_000 == 500 && i < 20_500 {
                    batch.push(syn(client, victim, 40_000, tcp::ACK | tcp::PSH, ts));
                }
                if batch.len() >= 256 {
                    pipe.packets(&mut table, &batch);
                    batch.clear();
                }
            }
            pipe.packets(&mut table, &batch);
            // Long after the flood (and after its alert closed), one probe at the victim.
            pipe.packets(&mut table, &[syn(late, victim, 50_000, tcp::SYN, 180 * S)]);
            let totals = pipe.finish(&mut table).expect("finish");
            assert_eq!(totals.flows, u64::from(FORGED) + 2);
        }
        drop(store);
        let c = open_ro(&db).expect("read");
        let q = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).expect(sql) };
        let rows = q("SELECT count(*) FROM flows");
        let summed = q("SELECT coalesce(sum(flows), 0) FROM attack_flows");
        let summed_packets = q("SELECT coalesce(sum(packets), 0) FROM attack_flows");
        assert_eq!(
            rows + summed,
            i64::from(FORGED) + 2,
            "{rows} rows + {summed} summed"
        );
        assert_eq!(summed_packets, summed, "one SYN per forged flow");
        assert!(
            summed >= i64::from(FORGED) * 9 / 10,
            "most of the flood is summed: {summed} of {FORGED}"
        );
        // The first rows of each alert that claims the flood, and those before it opened.
        let alerts = q("SELECT count(*) FROM alerts WHERE kind IN ('syn_flood', 'ddos')");
        assert!(alerts >= 1, "the flood raised an alert");
        assert!(
            rows >= ATTACK_FLOW_ROWS as i64 && rows <= alerts * ATTACK_FLOW_ROWS as i64 + 2_000,
            "{rows} flow rows for {alerts} alert(s)"
        );
        let kept = |src: Ipv4Addr| {
            q(&format!(
                "SELECT count(*) FROM flows WHERE src_ip = '{src}'"
            ))
        };
        assert_eq!(kept(client), 1, "the conversation keeps its row");
        assert_eq!(kept(late), 1, "a probe after the attack keeps its row");
        // Every summed row names an alert of the session, and the alert list shows the sums.
        assert_eq!(
            q(
                "SELECT count(*) FROM attack_flows f LEFT JOIN alerts a ON a.alert_key = f.alert_key WHERE a.id IS NULL"
            ),
            0
        );
        let list = crate::sink::store::read::list(
            &c,
            crate::sink::store::read::Table::Alerts,
            &crate::sink::store::read::Filter {
                limit: 100,
                ..Default::default()
            },
        )
        .expect("list");
        let shown: i64 = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|a| a["flows_summed"]["flows"].as_i64())
            .sum();
        assert_eq!(shown, summed);
        // The totals count every flow seen, summed or not.
        let st = crate::sink::store::read::stats(
            &c,
            &crate::sink::store::read::Filter {
                limit: 10,
                ..Default::default()
            },
        )
        .expect("stats");
        assert_eq!(st["totals"]["flows"], i64::from(FORGED) + 2, "{st}");
        assert_eq!(st["totals"]["flows_summed"], summed);
        drop(c);
        std::fs::remove_dir_all(&dir).ok();
    }
}
