//! `sensor dry-run`: changed rules tried on the rules history (what `sensor run` records, or
//! `sensor replay --history`), side by side with the rules in force; the same run as the
//! dashboard's and the API's dry run.

use std::path::PathBuf;

use crate::{
    config::Config,
    history::dry_run::{Ctx, DryRun, dry_run},
    record::AlertRecord,
    ruleset,
};

pub(super) struct DryRunArgs {
    pub rules: PathBuf,
    pub config: Config,
    pub history: PathBuf,
    pub pcaps: Vec<PathBuf>,
    /// What the history is of, when not a directory of the user's (captures).
    pub label: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub json: bool,
}

/// RFC 3339 or Unix seconds, as ns.
fn time(name: &str, v: &str) -> anyhow::Result<u64> {
    if let Ok(s) = v.parse::<f64>()
        && s.is_finite()
        && (0.0..4.0e9).contains(&s)
    {
        return Ok((s * 1e9) as u64);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .map(|n| n.max(0) as u64)
        .ok_or_else(|| anyhow::anyhow!("--{name} must be RFC 3339 or Unix seconds, not {v:?}"))
}

pub(super) fn run(a: DryRunArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.rules)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", a.rules.display()))?;
    let candidate = ruleset::parse(&text, &a.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.rules.display()))?;
    if !a.pcaps.is_empty() {
        // The captures' history, recorded into a directory of its own and removed after.
        let tmp = std::env::temp_dir().join(format!("sensor-dry-run-{}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&tmp);
        let recorded = crate::drive::replay::record_history(&a.pcaps, &a.config, &tmp);
        let out = recorded.map_err(anyhow::Error::from).and_then(|_| {
            let label = a
                .pcaps
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ");
            run(DryRunArgs {
                history: tmp.clone(),
                pcaps: Vec::new(),
                label: Some(label),
                ..a
            })
        });
        let _ignored = std::fs::remove_dir_all(&tmp);
        return out;
    }
    if !a.history.is_dir() {
        anyhow::bail!(
            "no rules history in {} (`sensor run` writes one in DATA_DIR/history; \
             `sensor replay --history DIR` writes one from captures)",
            a.history.display()
        );
    }
    let from = a.from.as_deref().map(|v| time("from", v)).transpose()?;
    let to = a.to.as_deref().map(|v| time("to", v)).transpose()?;
    let ctx = Ctx {
        networks: a.config.networks.build(),
        geo: crate::geo::Geo::lazy(&a.config.geo.dir),
    };
    let d = dry_run(
        &a.history,
        from.unwrap_or(0),
        to.unwrap_or(u64::MAX),
        &a.config.rules,
        &candidate,
        &ctx,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        let what = a
            .label
            .clone()
            .unwrap_or_else(|| a.history.display().to_string());
        print(&d, &what);
    }
    Ok(())
}

fn line(sign: char, r: &AlertRecord) {
    println!(
        "  {sign} {} {}: {}",
        r.first_seen,
        r.kind.as_str(),
        r.summary
    );
}

fn print(d: &DryRun, what: &str) {
    let h = &d.history;
    let span = match (h.first_ns, h.last_ns) {
        (Some(a), Some(b)) => format!(
            "{} to {}",
            crate::record::rfc3339_us(a),
            crate::record::rfc3339_us(b)
        ),
        _ => "no data in the range".into(),
    };
    println!(
        "dry run over {} ({span}): {} flow events, {} finished flows, {} segment(s), {:.1} MB, read and judged twice in {} ms",
        what,
        h.events,
        h.flows,
        h.segments,
        h.bytes as f64 / 1e6,
        d.elapsed_ms
    );
    println!(
        "rules in force: {} alert(s); changed rules: {} alert(s); {} the same",
        d.current_alerts, d.candidate_alerts, d.unchanged_total
    );
    println!("would raise ({}):", d.would_raise_total);
    d.would_raise.iter().for_each(|r| line('+', r));
    println!("would no longer raise ({}):", d.would_not_raise_total);
    d.would_not_raise.iter().for_each(|r| line('-', r));
    if h.dropped > 0 {
        println!(
            "note: {} flow records past [history] max_records_per_s were not kept: those seconds are partly unseen",
            h.dropped
        );
    }
    if h.truncated > 0 {
        println!(
            "note: {} segment(s) end in a record cut short (a crash or a full disk); read up to it",
            h.truncated
        );
    }
}
