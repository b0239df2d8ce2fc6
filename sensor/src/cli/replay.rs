//! `sensor replay`: capture files through the pipeline into the chosen outputs (database,
//! JSONL, EVE, webhook, syslog, IPFIX, email), with a summary on standard error.

use std::path::PathBuf;

use super::DbArgs;
use crate::{
    config::Config,
    detect::ml::model::Model,
    drive::replay::{ReplayError, ReplayOptions, replay},
    evidence::{Recorder, Window},
    metrics::Registry,
    sink::{
        Outputs, Sink,
        jsonl::{Content, JsonlSink},
        store::{Store, StoreSink},
    },
    source::pcap,
};

pub(super) struct ReplayArgs {
    pub pcaps: Vec<PathBuf>,
    pub flows_jsonl: Option<PathBuf>,
    pub alerts_jsonl: Option<PathBuf>,
    pub config: Config,
    pub no_detect: bool,
    pub model: Option<PathBuf>,
    pub online_model: Option<PathBuf>,
    pub history: Option<PathBuf>,
    pub db: DbArgs,
}

pub(super) fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let model = a.model.as_deref().map(Model::load).transpose()?;
    let online = a
        .online_model
        .as_deref()
        .map(crate::detect::ml::online::OnlineModel::load)
        .transpose()?
        .map(|m| crate::detect::ml::online::Online::judge(m, a.config.rules.max_tracked));
    // Every file is checked before any output is created: a bad path changes nothing.
    for p in &a.pcaps {
        pcap::open_file(p).map_err(ReplayError::from)?;
    }
    let store =
        a.db.path()
            .map(|p| Store::open(&p, a.config.store))
            .transpose()?;
    let outputs =
        Outputs::start(&a.config.outputs(), &Registry::default()).map_err(ReplayError::from)?;
    let mut sinks: Vec<Box<dyn Sink + '_>> = Vec::new();
    if let Some(p) = &a.flows_jsonl {
        sinks.push(Box::new(
            JsonlSink::create(p, Content::Flows).map_err(ReplayError::from)?,
        ));
    }
    if let Some(p) = &a.alerts_jsonl {
        sinks.push(Box::new(
            JsonlSink::create(p, Content::Alerts).map_err(ReplayError::from)?,
        ));
    }
    if let Some(st) = &store {
        let source = a
            .pcaps
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        sinks.push(Box::new(StoreSink::new(st, "replay", &source, true)?));
    }
    // Evidence files sit beside the database and are named after its session.
    let recorder = match &store {
        Some(st) if a.config.evidence.enabled && !a.no_detect => Some(Recorder::new(
            a.config.evidence.clone(),
            a.db.data_dir.join("evidence"),
            st.evidence_prefix(),
            Window::FromFirstSeen,
        )?),
        _ => None,
    };
    sinks.extend(outputs.sinks(false));
    let history = match &a.history {
        Some(dir) if !a.no_detect => {
            Some(crate::history::Writer::new(&a.config.history, dir.clone())?)
        }
        _ => None,
    };
    let opts = if a.no_detect {
        ReplayOptions::flows_only(&a.config)
    } else {
        ReplayOptions::new(&a.config)
            .with_model(model)
            .with_online(online)
            .with_evidence(recorder)
            .with_history(history)
    };
    let s = replay(&a.pcaps, opts, sinks)?;
    eprintln!(
        "replay: {} file(s), {} packets ({} bytes), {} flows, {:.0} packets/s in {:.3} s; \
         {} non-IP, {} unparsable, {} dropped by the flow cap",
        s.files,
        s.read.packets,
        s.read.bytes,
        s.flows,
        s.packets_per_second(),
        s.elapsed.as_secs_f64(),
        s.read.non_ip,
        s.read.parse_errors,
        s.table.dropped_packets_by_cap,
    );
    if !a.no_detect {
        let by_kind: Vec<String> = s
            .alerts
            .iter()
            .map(|(k, n)| format!("{n} {}", k.as_str()))
            .collect();
        let total: u64 = s.alerts.values().sum();
        eprintln!(
            "replay: {total} alert(s){}{}",
            if by_kind.is_empty() { "" } else { ": " },
            by_kind.join(", ")
        );
    }
    if let Some(st) = &store {
        eprintln!("replay: results stored in {}", st.path().display());
    }
    if let Some(dir) = &a.history
        && !a.no_detect
    {
        eprintln!(
            "replay: rules history in {} (try changed rules on it: sensor dry-run RULES.toml --history {})",
            dir.display(),
            dir.display()
        );
    }
    if let Some(e) = &s.evidence
        && e.files > 0
    {
        eprintln!(
            "replay: {} alert pcap file(s), {} packets, in {}{}",
            e.files,
            e.packets,
            a.db.data_dir.join("evidence").display(),
            [
                (e.cut_short, "cut short by the per-alert budget"),
                (e.refused, "of alerts not recorded: too many at once"),
                (e.errors, "failed to write"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("; {n} {what}"))
            .collect::<String>()
        );
    }
    for (file, reason) in &s.truncated {
        eprintln!(
            "replay: warning: {} ends mid-record ({reason}); its earlier packets were used",
            file.display()
        );
    }
    for line in outputs.close() {
        eprintln!("replay: {line}");
    }
    Ok(())
}
