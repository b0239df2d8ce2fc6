//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` (nightly, libFuzzer, address
//! sanitizer) for a set time each and prints what ROBUSTNESS.md records: executions, rate,
//! corpus size, peak memory and failures. Failing inputs stay in `fuzz/artifacts/TARGET/`;
//! fixed ones are copied to `fuzz/regressions/TARGET/`, which `cargo xtask test` replays.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{corpora, setup, workspace_root};

/// Every target, in the order they run.
pub const TARGETS: [&str; 5] = ["packet", "pcap", "config", "model", "api"];

fn cargo_fuzz_installed() -> bool {
    Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nightly_cargo(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").current_dir(root);
    // The outer (stable) cargo's settings must not leak into the nightly build.
    for v in [
        "CARGO",
        "RUSTC",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
    ] {
        c.env_remove(v);
    }
    // The fuzzed code is userspace only: no XDP object is needed.
    c.env("AYA_BUILD_SKIP", "1");
    c
}

fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
        .and_then(|v| v.trim().parse().ok())
}

pub fn fuzz(targets: &[String], seconds: u64) -> Result<()> {
    let root = workspace_root();
    if !cargo_fuzz_installed() {
        eprintln!("setup: cargo install cargo-fuzz");
        setup::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!(
                    "no fuzz target {t:?}; the targets are {}",
                    TARGETS.join(", ")
                );
            }
        }
        targets.iter().map(String::as_str).collect()
    };
    setup::run(nightly_cargo(&root).args(["fuzz", "build", "-O", "-a"]))
        .context("building the fuzz targets")?;
    // The built binaries run directly (`cargo fuzz run` would rebuild from a tree that may
    // change meanwhile).
    let bin_dir = root.join("fuzz/target/x86_64-unknown-linux-gnu/release");
    let mut failed = Vec::new();
    for t in chosen {
        let corpus = root.join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let artifacts = root.join("fuzz/artifacts").join(t);
        std::fs::create_dir_all(&artifacts)?;
        let mut cmd = Command::new(bin_dir.join(t));
        cmd.current_dir(&root)
            .env("ASAN_OPTIONS", "detect_odr_violation=0")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus)
            .arg(root.join("fuzz/seeds").join(t))
            .arg(root.join("fuzz/regressions").join(t));
        // Real hostile captures as extra starting points (read, never written).
        let hostile = corpora().join("tcpdump-tests");
        if t == "pcap" && hostile.is_dir() {
            cmd.arg(hostile);
        }
        cmd.args([
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048",
            "-timeout=20",
            "-print_final_stats=1",
        ]);
        if t == "pcap" {
            cmd.arg("-max_len=65536");
        }
        eprintln!("fuzz {t}: {seconds} s");
        let started = std::time::Instant::now();
        let out = cmd
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot start cargo fuzz run {t}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let log_path = root.join("fuzz/artifacts").join(format!("{t}.log"));
        std::fs::create_dir_all(root.join("fuzz/artifacts"))?;
        std::fs::write(&log_path, log.as_bytes())?;
        let execs = stat(&log, "number_of_executed_units").unwrap_or(0);
        let rate = stat(&log, "average_exec_per_sec").unwrap_or(0);
        let rss = stat(&log, "peak_rss_mb").unwrap_or(0);
        let units = std::fs::read_dir(&corpus).map_or(0, Iterator::count);
        let verdict = if out.status.success() {
            "no failure".to_owned()
        } else {
            failed.push(t);
            let why = log
                .lines()
                .find(|l| l.contains("panicked at") || l.contains("ERROR: libFuzzer"))
                .unwrap_or("failed");
            format!("FAILED: {why} (log {})", log_path.display())
        };
        println!(
            "fuzz {t}: {execs} executions in {:.0} s ({rate}/s), corpus {units} inputs, peak RSS {rss} MB, {verdict}",
            started.elapsed().as_secs_f64()
        );
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}
