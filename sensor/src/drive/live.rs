//! The live loop: one thread owns the flow table, the pipeline and the capture sources. Every
//! poll interval it drains the XDP maps; in between it takes the libpcap readers' packets and
//! the API's control commands (attach, detach, swap the model), so everything that touches the
//! table or the detectors happens on this one thread and needs no lock.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::report::Report;
use crate::{
    detect::ml::model::Model,
    evidence::EvidenceMetrics,
    flow::FlowTable,
    kernel::{KernelError, Poller, poller::KernelMetrics, watch::KernelWatch},
    metrics::{Counter, Gauge, Registry},
    mitigate::{
        MitigateError, MitigationConfig, MitigationMetrics, Mitigator, Origin, upstream::Upstream,
    },
    pipeline::{Pipeline, Totals},
    sink::SinkError,
    source::attached::{Attachment, Batch, CaptureMode, SourceError, Sources},
};

/// The loop's own numbers on `/metrics` (each room declares its own: the kernel's counters in
/// `kernel::poller`, the detector's in `detect`, ...).
struct LoopMetrics {
    flows_active: Gauge,
    /// The whole last poll cycle: kernel maps drained, then rules, model and sinks on what
    /// they gave. Live detection keeps up while this stays under the poll interval.
    poll_cycle_us: Gauge,
    poll_cycle_max_us: Gauge,
    polls_late: Counter,
}

impl LoopMetrics {
    fn new(m: &Registry) -> Self {
        Self {
            flows_active: m.gauge("sensor_flows_active", "Flows held in the flow table."),
            poll_cycle_us: m.gauge(
                "sensor_poll_cycle_microseconds",
                "Duration of the last poll cycle: maps drained, then detection and sinks.",
            ),
            poll_cycle_max_us: m.gauge(
                "sensor_poll_cycle_max_microseconds",
                "Longest poll cycle since start.",
            ),
            polls_late: m.counter(
                "sensor_polls_late_total",
                "Poll cycles longer than the poll interval (detection fell behind).",
            ),
        }
    }
}

/// What the API asks of the live loop.
pub enum ControlCmd {
    Start {
        iface: String,
        mode: CaptureMode,
        reply: tokio::sync::oneshot::Sender<Result<Attachment, SourceError>>,
    },
    Stop {
        iface: String,
        reply: tokio::sync::oneshot::Sender<Result<Attachment, SourceError>>,
    },
    SetModel {
        model: Option<Box<Model>>,
        reply: tokio::sync::oneshot::Sender<()>,
    },
    Blocklist {
        reply: tokio::sync::oneshot::Sender<Result<Value, MitigateError>>,
    },
    Block {
        net: IpNet,
        ttl_s: u64,
        reason: String,
        reply: tokio::sync::oneshot::Sender<Result<Value, MitigateError>>,
    },
    Unblock {
        target: String,
        reply: tokio::sync::oneshot::Sender<Result<Value, MitigateError>>,
    },
    /// New rules (the editor's apply), and the audit row of the change.
    SetRules {
        rules: Box<crate::detect::RuleConfig>,
        change: Box<crate::ruleset::RuleChange>,
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// Writes out the rules history held in memory (before a dry run reads it).
    FlushHistory {
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// Upstream mitigation: sessions and announcements.
    Upstream {
        reply: tokio::sync::oneshot::Sender<Value>,
    },
    /// Withdraws an upstream announcement by its name.
    Withdraw {
        target: String,
        reply: tokio::sync::oneshot::Sender<Result<Value, MitigateError>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Mitigate(#[from] MitigateError),
    #[error("the live loop has stopped")]
    Stopped,
}

/// The API's handle on a running live loop.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<ControlCmd>,
    attachments: Arc<RwLock<Vec<Attachment>>>,
    model: Arc<RwLock<Option<String>>>,
    /// Threshold and how it was chosen, of the model in use ([`Model::summary`]).
    model_info: Arc<RwLock<Option<serde_json::Value>>>,
    /// The online model's summary (loaded at start with `--online-model`).
    online_info: Option<serde_json::Value>,
}

impl Control {
    /// Sends the command `make` builds around a reply channel; the loop's answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> ControlCmd,
    ) -> Result<T, ControlError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)
    }

    /// Attaches to `iface` (answered by the loop within one poll interval).
    pub async fn start(
        &self,
        iface: String,
        mode: CaptureMode,
    ) -> Result<Attachment, ControlError> {
        Ok(self
            .ask(|reply| ControlCmd::Start { iface, mode, reply })
            .await??)
    }

    pub async fn stop(&self, iface: String) -> Result<Attachment, ControlError> {
        Ok(self
            .ask(|reply| ControlCmd::Stop { iface, reply })
            .await??)
    }

    /// Swaps the model the pipeline scores flows with; `path` is what `/api/status` shows.
    pub async fn set_model(
        &self,
        model: Option<Model>,
        path: Option<String>,
    ) -> Result<(), ControlError> {
        let info = model.as_ref().map(Model::summary);
        self.ask(|reply| ControlCmd::SetModel {
            model: model.map(Box::new),
            reply,
        })
        .await?;
        if let Ok(mut m) = self.model.write() {
            *m = path;
        }
        if let Ok(mut m) = self.model_info.write() {
            *m = info;
        }
        Ok(())
    }

    /// Swaps the rules of the running pipeline (open alerts stay open) and records `change`.
    pub async fn set_rules(
        &self,
        rules: crate::detect::RuleConfig,
        change: crate::ruleset::RuleChange,
    ) -> Result<(), ControlError> {
        self.ask(|reply| ControlCmd::SetRules {
            rules: Box::new(rules),
            change: Box::new(change),
            reply,
        })
        .await
    }

    /// Has the rules history written out up to the last poll: a dry run then sees everything
    /// the rules saw.
    pub async fn flush_history(&self) -> Result<(), ControlError> {
        self.ask(|reply| ControlCmd::FlushHistory { reply }).await
    }

    /// Blocklist and rate-limit entries with their kernel drop counters, and what is protected.
    pub async fn blocklist(&self) -> Result<Value, ControlError> {
        Ok(self.ask(|reply| ControlCmd::Blocklist { reply }).await??)
    }

    /// Blocks a source prefix for `ttl_s` seconds (an operator's block).
    pub async fn block(
        &self,
        net: IpNet,
        ttl_s: u64,
        reason: String,
    ) -> Result<Value, ControlError> {
        Ok(self
            .ask(|reply| ControlCmd::Block {
                net,
                ttl_s,
                reason,
                reply,
            })
            .await??)
    }

    /// Removes an entry (a prefix, or `rate:ADDR/PROTO`).
    pub async fn unblock(&self, target: String) -> Result<Value, ControlError> {
        Ok(self
            .ask(|reply| ControlCmd::Unblock { target, reply })
            .await??)
    }

    /// Upstream mitigation's sessions and announcements.
    pub async fn upstream(&self) -> Result<Value, ControlError> {
        self.ask(|reply| ControlCmd::Upstream { reply }).await
    }

    /// Withdraws an upstream announcement (`flowspec:...` or `rtbh:...`).
    pub async fn withdraw(&self, target: String) -> Result<Value, ControlError> {
        Ok(self
            .ask(|reply| ControlCmd::Withdraw { target, reply })
            .await??)
    }

    /// Interfaces watched now.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.attachments
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// The model the pipeline uses now, if any.
    pub fn model(&self) -> Option<String> {
        self.model.read().ok().and_then(|m| m.clone())
    }

    /// The online model in use, if any.
    pub fn online_info(&self) -> Option<serde_json::Value> {
        self.online_info.clone()
    }

    /// Threshold, its rule and expected alert rate of the model in use.
    pub fn model_info(&self) -> Option<serde_json::Value> {
        self.model_info.read().ok().and_then(|m| m.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// How often watched interfaces are checked (down, deleted, back).
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

/// The live loop's state.
pub struct LiveLoop<'a> {
    sources: Sources,
    table: FlowTable,
    pipeline: Pipeline<'a>,
    poller: Poller,
    poll: Duration,
    control: mpsc::Receiver<ControlCmd>,
    packets: mpsc::Receiver<Batch>,
    metrics: LoopMetrics,
    kernel_metrics: KernelMetrics,
    evidence_metrics: EvidenceMetrics,
    mitigation_metrics: MitigationMetrics,
    errors_logged: Option<Instant>,
    mitigator: Mitigator,
    /// Mitigation upstream over BGP, when `[bgp]` is enabled.
    upstream: Option<Upstream>,
    /// The kernel side of the pipeline's evidence recorder.
    watch: KernelWatch,
}

/// Batches of libpcap packets waiting for the loop at most (64 packets each).
const PACKET_QUEUE: usize = 4096;

/// Builds a loop and the handle the API uses to control it. `model` names the model the
/// pipeline starts with (for `/api/status`).
#[allow(
    clippy::too_many_arguments,
    reason = "the loop's parts, each handed over once by the agent"
)]
pub fn new<'a>(
    kernel: crate::kernel::KernelConfig,
    force: bool,
    table: FlowTable,
    pipeline: Pipeline<'a>,
    poll: Duration,
    metrics: &Registry,
    model: Option<String>,
    mitigation: MitigationConfig,
    upstream: Option<Upstream>,
) -> (LiveLoop<'a>, Control) {
    let mut upstream = upstream;
    if let Some(u) = &mut upstream {
        u.publish_metrics(metrics);
    }
    let mut pipeline = pipeline;
    pipeline.tap_alerts();
    pipeline.publish_metrics(metrics);
    let (ctl_tx, ctl_rx) = mpsc::channel();
    let (pkt_tx, pkt_rx) = mpsc::sync_channel(PACKET_QUEUE);
    let shared = Arc::new(RwLock::new(Vec::new()));
    let sources = Sources::new(kernel, force, pkt_tx, Arc::clone(&shared), metrics);
    let info = pipeline
        .detector()
        .and_then(|d| d.model())
        .map(Model::summary);
    let online_info = pipeline
        .detector()
        .and_then(|d| d.online())
        .and_then(|o| o.model())
        .map(crate::detect::ml::online::OnlineModel::summary);
    let control = Control {
        tx: ctl_tx,
        attachments: shared,
        model: Arc::new(RwLock::new(model)),
        model_info: Arc::new(RwLock::new(info)),
        online_info,
    };
    (
        LiveLoop {
            sources,
            table,
            pipeline,
            poller: Poller::new(),
            poll,
            control: ctl_rx,
            packets: pkt_rx,
            metrics: LoopMetrics::new(metrics),
            kernel_metrics: KernelMetrics::new(metrics),
            evidence_metrics: EvidenceMetrics::new(metrics),
            mitigation_metrics: MitigationMetrics::new(metrics),
            errors_logged: None,
            mitigator: Mitigator::new(mitigation),
            upstream,
            watch: KernelWatch::new(metrics),
        },
        control,
    )
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl LiveLoop<'_> {
    /// Attaches at start-up (`sensor run --iface`); errors are the caller's to report.
    pub fn start(&mut self, iface: &str, mode: CaptureMode) -> Result<Attachment, SourceError> {
        self.sources.start(iface, mode)
    }

    /// Runs until `stop` is set, then takes a last poll. Returns when the loop has stopped;
    /// [`LiveLoop::finish`] flushes what it holds.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), LiveError> {
        let mut next_poll = Instant::now();
        // Interfaces that went down, went away or came back (see `Sources::supervise`).
        let mut next_check = Instant::now() + SUPERVISE_EVERY;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            while let Ok(cmd) = self.control.try_recv() {
                self.command(cmd);
            }
            while let Ok(batch) = self.packets.try_recv() {
                self.pipeline.packets(&mut self.table, &batch);
            }
            let now = Instant::now();
            if now >= next_check {
                self.sources.supervise();
                next_check = now + SUPERVISE_EVERY;
            }
            if now >= next_poll || stopping {
                self.poll_once()?;
                next_poll += self.poll;
                if next_poll <= now {
                    // Fell behind (a huge drain): no burst of polls to catch up.
                    next_poll = now + self.poll;
                }
            }
            if stopping {
                return Ok(());
            }
            // Packets or the next poll, whichever comes first; short steps so that a stop
            // request or a control command is honoured quickly.
            let wait = next_poll
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20));
            if let Ok(batch) = self.packets.recv_timeout(wait) {
                self.pipeline.packets(&mut self.table, &batch);
            }
        }
    }

    fn command(&mut self, cmd: ControlCmd) {
        match cmd {
            ControlCmd::Start { iface, mode, reply } => {
                let r = self.sources.start(&iface, mode);
                if let Err(e) = &r {
                    tracing::warn!(iface, error = %Report(&e), "capture start refused");
                }
                let _ignored = reply.send(r);
            }
            ControlCmd::Stop { iface, reply } => {
                // Take what XDP counted on it before it goes.
                if let Err(e) = self.poll_once() {
                    tracing::error!(error = %Report(&e), "poll before detaching failed");
                }
                let _ignored = reply.send(self.sources.stop(&iface));
            }
            ControlCmd::SetModel { model, reply } => {
                self.pipeline.set_model(model.map(|m| *m));
                tracing::info!("model swapped into the running pipeline");
                let _ignored = reply.send(());
            }
            ControlCmd::FlushHistory { reply } => {
                self.pipeline.flush_history();
                let _ignored = reply.send(());
            }
            ControlCmd::SetRules {
                rules,
                change,
                reply,
            } => {
                self.pipeline.set_rules(*rules);
                self.pipeline.rule_change(&change);
                tracing::info!(actor = %change.actor, "rules swapped into the running pipeline");
                let _ignored = reply.send(());
            }
            ControlCmd::Blocklist { reply } => {
                let enforced = self.sources.has_xdp();
                let auto: Vec<&str> = self
                    .mitigator
                    .config()
                    .kinds
                    .iter()
                    .map(|k| k.as_str())
                    .collect();
                let ttl = self.mitigator.config().ttl_s;
                let protected = self.mitigator.protected();
                let r = self
                    .mitigator
                    .list(self.sources.program().map(|p| &*p))
                    .map(|entries| {
                        json!({
                            "entries": entries,
                            "xdp_attached": enforced,
                            "automatic_kinds": auto,
                            "ttl_s": ttl,
                            "protected": protected,
                        })
                    });
                let _ignored = reply.send(r);
            }
            ControlCmd::Block {
                net,
                ttl_s,
                reason,
                reply,
            } => {
                self.sync_mitigation();
                let r =
                    self.mitigator
                        .block(net, ttl_s, reason, Origin::Api, self.sources.program());
                self.mitigation_events();
                let _ignored = reply.send(r);
            }
            ControlCmd::Unblock { target, reply } => {
                self.sync_mitigation();
                let r = self.mitigator.remove(&target, self.sources.program());
                self.mitigation_events();
                let _ignored = reply.send(r);
            }
            ControlCmd::Upstream { reply } => {
                let v = self
                    .upstream
                    .as_ref()
                    .map_or_else(|| json!({ "enabled": false }), Upstream::view);
                let _ignored = reply.send(v);
            }
            ControlCmd::Withdraw { target, reply } => {
                let r = match &mut self.upstream {
                    None => Err(MitigateError::NotFound(format!(
                        "{target}: upstream mitigation is off ([bgp] enabled = false)"
                    ))),
                    Some(u) => u
                        .remove(&target)
                        .ok_or_else(|| MitigateError::NotFound(target.clone())),
                };
                self.mitigation_events();
                let _ignored = reply.send(r);
            }
        }
    }

    /// Puts the mitigation state into the program once it is loaded.
    fn sync_mitigation(&mut self) {
        if let Err(e) = self.mitigator.sync(self.sources.program()) {
            tracing::error!(error = %Report(&e), "writing mitigation entries into the kernel failed");
        }
    }

    /// Alerts that opened or closed since the last poll act; expired entries end.
    fn mitigate(&mut self) {
        self.sync_mitigation();
        let changes = self.pipeline.take_alert_changes();
        for a in &changes.opened {
            self.mitigator.alert_opened(a, self.sources.program());
        }
        for a in &changes.closed {
            self.mitigator.alert_closed(a.id);
        }
        if let Err(e) = self.mitigator.sweep(self.sources.program()) {
            tracing::error!(error = %Report(&e), "expiring mitigation entries failed");
        }
        if let Some(u) = &mut self.upstream {
            for a in changes.opened.iter().chain(&changes.updated) {
                u.alert(a);
            }
            for a in &changes.closed {
                u.alert_closed(a.id);
            }
            u.tick();
            let now = unix_now_ns();
            let (down, back) = u.session_alerts(now);
            if let Some(d) = self.pipeline.detector_mut() {
                for s in down {
                    d.session_down(s.peer, s.evidence(now), now);
                }
                for p in back {
                    d.session_up(p, now);
                }
            }
        }
        self.mitigation_events();
    }

    /// Audit rows to the sinks.
    fn mitigation_events(&mut self) {
        for ev in self.mitigator.take_events() {
            self.pipeline.mitigation(&ev);
        }
        if let Some(u) = &mut self.upstream {
            for ev in u.take_events() {
                self.pipeline.mitigation(&ev);
            }
        }
        self.mitigation_metrics.publish(&self.mitigator);
    }

    /// Evidence: what the kernel copied into the alerts' files, windows that ended closed,
    /// the watch map in step with the recordings that run.
    fn evidence(&mut self) {
        let Some(rec) = self.pipeline.recorder_mut() else {
            return;
        };
        if let Some(prog) = self.sources.program() {
            KernelWatch::drain(rec, prog);
            rec.expire(unix_now_ns());
            if let Err(e) = self.watch.sync(rec, prog) {
                tracing::error!(error = %Report(&e), "updating the evidence watch map failed");
            }
        } else {
            rec.expire(unix_now_ns());
        }
        self.evidence_metrics.publish(&rec.stats());
    }

    /// One poll: XDP maps (once the program is loaded), time forward, detection, metrics.
    fn poll_once(&mut self) -> Result<(), LiveError> {
        let started = Instant::now();
        let now = unix_now_ns();
        // Alerts are promised a file only while XDP, which copies their packets, is attached.
        let xdp = self.sources.has_xdp();
        if let Some(rec) = self.pipeline.recorder_mut() {
            rec.set_capturing(xdp);
        }
        if let Some(prog) = self.sources.program() {
            let finished = self.pipeline.finished();
            let stats = self
                .poller
                .poll(prog, &mut self.table, &mut |f| finished.push(f))?;
            self.pipeline.kernel_counters(now, &stats.counters_delta);
            self.pipeline.process(&mut self.table);
            self.pipeline.overflow(now, &stats.dst_overflow);
            self.kernel_metrics.record(&stats);
        } else {
            // libpcap only (or idle): time still passes, so idle flows end.
            let finished = self.pipeline.finished();
            self.table.advance_to(now, &mut |f| finished.push(f));
            self.pipeline.process(&mut self.table);
        }
        self.pipeline.tick(now);
        self.mitigate();
        self.evidence();
        let cycle = started.elapsed();
        let m = &self.metrics;
        let us = cycle.as_micros() as u64;
        m.poll_cycle_us.set(us);
        m.poll_cycle_max_us.raise_to(us);
        if cycle > self.poll {
            m.polls_late.inc();
        }
        self.metrics();
        Ok(())
    }

    fn metrics(&mut self) {
        self.metrics.flows_active.set(self.table.len() as u64);
        // A failing sink is logged once a minute, not once per record.
        if let Some(e) = self.pipeline.take_error()
            && self
                .errors_logged
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.errors_logged = Some(Instant::now());
            tracing::error!(
                error = %Report(&e),
                source = ?std::error::Error::source(&e),
                total = self.pipeline.totals().sink_errors,
                "an output failed (further failures are counted in sensor_sink_errors_total)"
            );
        }
    }

    /// Shutdown: a last poll, every flow and alert finished and written, then everything
    /// detached. Returns what went through the pipeline.
    pub fn finish(mut self) -> Result<Totals, SinkError> {
        if let Err(e) = self.poll_once() {
            tracing::error!(error = %Report(&e), "last poll failed");
        }
        while let Ok(batch) = self.packets.try_recv() {
            self.pipeline.packets(&mut self.table, &batch);
        }
        self.mitigate();
        self.mitigator.shutdown(self.sources.program());
        if let Some(u) = &mut self.upstream {
            u.shutdown();
        }
        self.mitigation_events();
        let totals = self.pipeline.finish(&mut self.table);
        // The last copied packets into their files, every file closed, the watches gone.
        if let Some(rec) = self.pipeline.recorder_mut() {
            if let Some(prog) = self.sources.program() {
                KernelWatch::drain(rec, prog);
                if let Err(e) = self.watch.clear(prog) {
                    tracing::error!(error = %Report(&e), "clearing the evidence watch map failed");
                }
            }
            rec.finish();
        }
        self.sources.stop_all();
        totals
    }
}
