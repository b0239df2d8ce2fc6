//! `cargo xtask bench-dryrun`: the rules history's size per hour of data and the dry run's time
//! over its last hour (`sensor dry-run`, the code the dashboard and the API run), then what
//! writing the history costs a replay with detection and the store on: `sensor replay` with and
//! without `--history`, same files, same run.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// A realistic change: lower scan and SYN-flood bars, and two operator rules.
const RULES: &str = "[rules]\nport_scan_ports = 40\nsyn_flood_syns = 50\n\n\
    [[rules.custom]]\nname = \"rdp_connections\"\nproto = \"tcp\"\ndst_ports = [3389]\n\
    count = \"flows\"\nwindow_s = 60\nthreshold = 50\n\n\
    [[rules.custom]]\nname = \"wide_fanout\"\ncount = \"distinct_dst_hosts\"\nwindow_s = 300\n\
    threshold = 30\n";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn dry_run(
    sensor: &Path,
    rules: &Path,
    history: &Path,
    range: Option<(u64, u64)>,
) -> Result<(Duration, Value)> {
    let mut c = Command::new(sensor);
    c.arg("dry-run")
        .arg(rules)
        .arg("--history")
        .arg(history)
        .arg("--json");
    if let Some((from, to)) = range {
        c.args(["--from", &from.to_string(), "--to", &to.to_string()]);
    }
    let start = Instant::now();
    let out = c.output().with_context(|| format!("{c:?}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((
        took,
        serde_json::from_slice(&out.stdout).context("dry-run JSON")?,
    ))
}

pub fn bench_dryrun(
    sensor: &Path,
    history: &Path,
    runs: usize,
    pcaps: &[PathBuf],
    work: &Path,
) -> Result<()> {
    std::fs::create_dir_all(work)?;
    let rules = work.join("dry-run-rules.toml");
    std::fs::write(&rules, RULES)?;
    if !history.is_dir() {
        bail!(
            "no rules history in {} (run `cargo xtask run` for an hour first, or pass --history)",
            history.display()
        );
    }
    // The whole history once: its span and size.
    let (_, all) = dry_run(sensor, &rules, history, None)?;
    let h = &all["history"];
    let (first, last) = (
        h["first_ns"].as_u64().context("empty history")?,
        h["last_ns"].as_u64().context("empty history")?,
    );
    let hours = (last - first) as f64 / 3.6e12;
    let bytes = h["bytes"].as_u64().unwrap_or(0) as f64;
    println!(
        "history: {} segment(s), {:.1} MB for {:.2} h of data ({} flow events, {} finished flows): {:.1} MB per hour",
        h["segments"],
        bytes / 1e6,
        hours,
        h["events"],
        h["flows"],
        bytes / 1e6 / hours.max(1e-9)
    );
    // The last hour (or all of it, when shorter), `runs` times.
    let from = last.saturating_sub(3_600_000_000_000).max(first);
    let range = Some((from / 1_000_000_000, last.div_ceil(1_000_000_000)));
    let mut wall = Vec::new();
    let mut inner = Vec::new();
    let mut seen = Value::Null;
    for _ in 0..runs.max(1) {
        let (t, v) = dry_run(sensor, &rules, history, range)?;
        wall.push(t);
        inner.push(Duration::from_millis(v["elapsed_ms"].as_u64().unwrap_or(0)));
        seen = v;
    }
    let sh = &seen["history"];
    println!(
        "dry run over the last {:.2} h ({} flow events, {} finished flows, read and judged twice): \
         median {:.2} s per `sensor dry-run` process ({:.2} s inside it), {} runs; \
         the rules in force raise {}, the changed rules {} ({} more, {} fewer)",
        (last - from) as f64 / 3.6e12,
        sh["events"],
        sh["flows"],
        median(wall).as_secs_f64(),
        median(inner).as_secs_f64(),
        runs.max(1),
        seen["current_alerts"],
        seen["candidate_alerts"],
        seen["would_raise_total"],
        seen["would_not_raise_total"],
    );
    if pcaps.is_empty() {
        return Ok(());
    }
    // What writing the history costs a replay with detection and the store on.
    let time = |with: bool| -> Result<Duration> {
        let mut t = Vec::new();
        for i in 0..runs.max(1) {
            let dir = work.join(format!("replay-{with}-{i}"));
            let _ignored = std::fs::remove_dir_all(&dir);
            let mut c = Command::new(sensor);
            c.arg("replay")
                .arg("--data-dir")
                .arg(&dir)
                .arg("--no-evidence")
                .args(pcaps);
            if with {
                c.arg("--history").arg(dir.join("history"));
            }
            let start = Instant::now();
            let st = c.output().with_context(|| format!("{c:?}"))?;
            t.push(start.elapsed());
            if !st.status.success() {
                bail!("{c:?}: {}", String::from_utf8_lossy(&st.stderr));
            }
            let _ignored = std::fs::remove_dir_all(&dir);
        }
        Ok(median(t))
    };
    let (without, with) = (time(false)?, time(true)?);
    println!(
        "replay with detection and the store on, {} file(s): {:.3} s without the history, {:.3} s with it: {:.3}x",
        pcaps.len(),
        without.as_secs_f64(),
        with.as_secs_f64(),
        with.as_secs_f64() / without.as_secs_f64()
    );
    Ok(())
}
