//! Project tasks: `cargo xtask setup | test | run | bench-xdp`.

mod api_contract;
mod bench_dryrun;
mod bench_live;
mod bench_replay;
mod corpus;
mod e2e_mitigation;
mod eval;
mod fuzz;
mod lab;
mod live;
mod setup;
mod soak;

use std::{
    env,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, set up, test and benchmark the gateway sensor"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: Debian packages, nightly rust-src, bpf-linker (idempotent).
    Setup,
    /// Set up, build and run every test; kernel tests must run (not skip) as root or in CI.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The API's contract alone (a step of `test`): `sensor serve` over replayed captures,
    /// checked by schemathesis against its own OpenAPI document.
    ApiContract,
    /// Set up, build and run the live sensor on `--iface`; without `--iface`, on the built-in
    /// lab (namespaces, benign traffic, an attack every --attack-every seconds) until Ctrl-C.
    Run {
        /// Interface to attach to; without it the built-in lab is used.
        #[arg(long)]
        iface: Option<String>,
        /// Lab only: where the dashboard is served on this host.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Lab only: seconds between attacks (each kind in turn).
        #[arg(long, default_value_t = 30)]
        attack_every: u64,
    },
    /// The built-in lab by hand: up (with benign traffic), down, attack KIND, record --out DIR.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// Live figures in the lab: detection latency per attack kind, accounting under load,
    /// flow-map overload and 1M-flow scale.
    BenchLive {
        /// Runs per attack kind for the latency figures.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Only these parts (latency, flood, accounting, overload, scale, upstream); default all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// The lab end-to-end test alone (part of `test`).
    E2e {
        /// Seconds of benign traffic checked for silence.
        #[arg(long, default_value_t = 30)]
        benign_seconds: u64,
        /// Only the mitigation cases (blocking, rate limiting, expiry).
        #[arg(long)]
        mitigation_only: bool,
    },
    /// A benign-traffic role inside a lab namespace (started by the lab itself).
    #[command(hide = true)]
    LabRole {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The rules history's size per hour and a dry run's time over its last hour, and what
    /// writing it costs a replay (with vs without, same run).
    BenchDryrun {
        /// The history (default: the lab's, data/lab/history, which `cargo xtask run` writes).
        #[arg(long)]
        history: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Packets/s of `sensor replay` vs `tcpdump -r -w /dev/null` (default: echo-connections and
    /// a generated 1M-packet, 100k-flow capture).
    BenchReplay { pcaps: Vec<PathBuf> },
    /// Detection quality on the corpora: attack captures detected, false alerts on benign ones.
    Eval {
        /// A lab evaluation set (`cargo xtask lab record --eval --out DIR`); default: the one
        /// under target/lab/eval-set, recorded first when absent (needs root).
        #[arg(long)]
        lab: Option<PathBuf>,
    },
    /// This Isolation Forest vs scikit-learn's (scoring time per flow, ROC AUC, held-out AUC
    /// per attack family), then the online KitNET model beside the forest, same run.
    BenchIforest {
        /// Only the online model beside the forest.
        #[arg(long)]
        online: bool,
        /// Passes of the online model's autoencoders over the baseline.
        #[arg(long, default_value_t = 1)]
        epochs: usize,
    },
    /// wrk against /api/alerts?limit=100 on 100k alerts and 1M flows while ingest runs.
    BenchApi,
    /// Compare `sensor replay` flow totals with nDPI's flow lists in ../shared/corpora/ndpi.
    CorpusCheck,
    /// Runs the cargo-fuzz targets (nightly; default all: packet, pcap, config, model, api)
    /// for --minutes each and prints executions and failures.
    Fuzz {
        targets: Vec<String>,
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
    /// The lab at full speed for --minutes: a flood throughout, every attack in turn, the API
    /// read without pause; memory, open files and alerts sampled and judged (not in `test`).
    Soak {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
    },
    /// BPF_PROG_TEST_RUN ns/packet of the sensor vs an empty XDP program, same run.
    BenchXdp {
        /// Arguments for the benchmark (--flows N --repeat N --rounds N --cache-slots N --coarse-time).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Create the namespaces and start benign traffic (a leftover lab is removed first).
    Up,
    /// Stop everything in the lab and delete its namespaces.
    Down,
    /// Launch one attack from the attacker namespace (the lab must be up).
    Attack {
        #[arg(value_enum)]
        kind: lab::attack::Kind,
        /// Seconds a flood runs (scans end by themselves).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Record baseline_traffic.pcap, attacks_only.pcap, demo_traffic.pcap and
    /// ground_truth.json into DIR (brings a fresh lab up and down); with `--eval`, the labelled
    /// one-case-per-file captures of `cargo xtask eval` and eval_truth.json instead.
    Record {
        #[arg(long)]
        out: PathBuf,
        /// Record the evaluation set (what `cargo xtask eval --lab DIR` reads).
        #[arg(long)]
        eval: bool,
        /// Seconds of benign traffic in the baseline capture.
        #[arg(long, default_value_t = 60)]
        baseline_seconds: u64,
    },
}

/// The lab creates namespaces, veths and XDP attachments: it needs root.
fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} creates network namespaces and attaches XDP: run it as root \
             (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN)"
        );
    }
    Ok(())
}

fn lab_command(cmd: &LabCommand) -> Result<()> {
    require_root("the lab")?;
    match cmd {
        LabCommand::Up => {
            lab::up()?;
            lab::traffic::start(&lab::work_dir("manual")?)?;
            eprintln!(
                "lab: up with benign traffic; attach with `ip netns exec {} target/release/sensor run --iface {} --iface {}`",
                lab::GW,
                lab::GW_IFACES[0],
                lab::GW_IFACES[1]
            );
            Ok(())
        }
        LabCommand::Down => lab::down(),
        LabCommand::Attack { kind, seconds } => {
            if lab::existing().is_empty() {
                bail!("the lab is not up (cargo xtask lab up)");
            }
            let log = lab::work_dir("manual")?.join("attacks.log");
            let r = lab::attack::launch(*kind, lab::attack::Target::default(), &log)?;
            for c in &r.commands {
                eprintln!("lab: {c}");
            }
            if kind.ends_by_itself() {
                r.wait(std::time::Duration::from_secs(120));
            } else {
                std::thread::sleep(std::time::Duration::from_secs(*seconds));
                drop(r);
            }
            Ok(())
        }
        LabCommand::Record {
            out, eval: true, ..
        } => lab::evalset::record(out),
        LabCommand::Record {
            out,
            baseline_seconds,
            eval: false,
        } => lab::record::record(out, *baseline_seconds),
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Removes namespaces left by test processes that were killed (a panic cleans up; SIGKILL
/// cannot): names carry the creating pid, so only those of dead processes are touched.
fn remove_stale_test_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let pid = ["sensor-peer-", "aya-test-"]
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("xtask: removing namespace {name} left by a killed test run");
            let _ignored = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Tests run by the steps, for the closing line.
#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

/// A named step of `cargo xtask test`: what it says when it passes, or why it failed.
struct Step {
    name: &'static str,
    secs: f64,
    outcome: Result<String>,
}

fn step(steps: &mut Vec<Step>, name: &'static str, run: impl FnOnce() -> Result<String>) -> bool {
    eprintln!("xtask test: step '{name}'");
    let t = std::time::Instant::now();
    let outcome = run();
    let ok = outcome.is_ok();
    steps.push(Step {
        name,
        secs: t.elapsed().as_secs_f64(),
        outcome,
    });
    ok
}

/// `cargo xtask test [FILTER]`: the steps below in order; with a filter, only the cargo tests
/// that match it. A failing step does not stop the later ones (except the build and the cargo
/// tests, which the rest rely on); the run fails when any step did.
fn test(args: &[String]) -> Result<()> {
    if is_root() {
        remove_stale_test_namespaces();
    }
    let ci = env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let full = args.is_empty();
    let mut steps = Vec::new();
    let mut counts = Counts::default();
    let ok = step(&mut steps, "build", || {
        // The tests that run the `sensor` binary itself (replay of hostile files, kill -9)
        // find it beside them in target/debug: build it first, so it is the tree's.
        cargo_build(cargo().args(["build", "-p", "sensor", "--bin", "sensor"]))
            .context("cargo build -p sensor")?;
        Ok(String::new())
    }) && step(&mut steps, "cargo tests", || {
        cargo_tests(args, ci, &mut counts)
    });
    if ok && full {
        step(&mut steps, "clippy", || clippy().map(|()| String::new()));
        step(&mut steps, "corpus oracle", || {
            corpus::corpus_check(&release_sensor()?, &corpora())?;
            Ok(String::new())
        });
        step(&mut steps, "lab evaluation", || {
            let lab = eval::lab_set_dir(is_root())?;
            if lab.is_none() && ci {
                bail!("the lab evaluation set needs root to be recorded");
            }
            eval::eval(&release_sensor()?, &corpora(), lab.as_deref())?;
            Ok(String::new())
        });
        step(&mut steps, "api contract", || {
            api_contract::run(&release_sensor()?, &corpora())
        });
        step(&mut steps, "lab e2e", || lab_e2e(ci, &mut counts));
    }
    println!();
    for s in &steps {
        match &s.outcome {
            Ok(detail) => println!(
                "step {} ... ok ({:.0} s){}",
                s.name,
                s.secs,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            ),
            Err(e) => println!("step {} ... FAILED ({:.0} s): {e:#}", s.name, s.secs),
        }
    }
    println!(
        "tests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.skipped
    );
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| s.outcome.is_err())
        .map(|s| s.name)
        .collect();
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The workspace's cargo tests, one at a time (kernel tests share kernel state).
fn cargo_tests(args: &[String], ci: bool, counts: &mut Counts) -> Result<String> {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--exclude", "sensor-ebpf"])
        .args(args);
    cmd.args(["--", "--test-threads=1"]);
    // Tests that cannot run here report themselves in this file, so the closing line counts
    // them as skipped rather than passed.
    let skip_log = workspace_root().join("target/skipped-tests.log");
    let _ignored = std::fs::remove_file(&skip_log);
    cmd.env("SENSOR_SKIP_LOG", &skip_log);
    if is_root() || ci {
        // Here they can run, so a skip would hide a failure.
        cmd.env("SENSOR_REQUIRE_KERNEL_TESTS", "1");
    } else {
        eprintln!("xtask: not root: kernel tests will be skipped with a message");
    }
    // Echo cargo's output and add the per-binary results up, so the closing line says how
    // many tests ran (the last binary alone is often doc tests).
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    let skipped = std::fs::read_to_string(&skip_log)
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0);
    counts.passed += passed.saturating_sub(skipped);
    counts.failed += failed;
    counts.skipped += ignored + skipped;
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(format!(
        "{} passed, {failed} failed, {} skipped",
        passed.saturating_sub(skipped),
        ignored + skipped
    ))
}

/// The lab end-to-end tests (real tools in namespaces, the live sensor, mitigation): root only.
fn lab_e2e(ci: bool, counts: &mut Counts) -> Result<String> {
    if !is_root() {
        if ci {
            bail!("the lab end-to-end test needs root");
        }
        eprintln!("SKIPPED lab end-to-end test: not root");
        counts.skipped += 1;
        return Ok("skipped: not root".into());
    }
    let sensor = release_sensor()?;
    let mut cases = live::e2e(&sensor, Duration::from_secs(30))?;
    cases.extend(e2e_mitigation::run(&sensor)?);
    let mut failed = 0;
    for (name, ok, detail) in &cases {
        println!(
            "e2e {name} ... {} ({detail})",
            if *ok { "ok" } else { "FAILED" }
        );
        if *ok {
            counts.passed += 1;
        } else {
            counts.failed += 1;
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} case(s) failed (logs in target/lab/e2e)");
    }
    Ok(format!("{} cases", cases.len()))
}

/// clippy over the host crates with warnings denied (`[workspace.lints]` in Cargo.toml).
fn clippy() -> Result<()> {
    let status = cargo()
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "sensor-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .status()
        .context("cannot start cargo clippy")?;
    if !status.success() {
        bail!("cargo clippy found warnings ({status}); they are errors here");
    }
    // The XDP program too, for its own target with nightly's rust-src (as aya's xtask does):
    // the workspace lints hold there (every unsafe block with its SAFETY note).
    // rustup's `cargo` proxy (not $CARGO, the stable toolchain's own binary) picks nightly.
    let status = Command::new("cargo")
        .current_dir(workspace_root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .args([
            "+nightly",
            "clippy",
            "--package",
            "sensor-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Zbuild-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .status()
        .context("cannot start cargo +nightly clippy for the eBPF crate")?;
    if !status.success() {
        bail!("cargo clippy found warnings in the eBPF crate ({status}); they are errors here");
    }
    println!("clippy: clean (host crates and the eBPF crate)");
    Ok(())
}

fn run(iface: Option<&str>, listen: std::net::SocketAddr, every: u64) -> Result<()> {
    let sensor = release_sensor()?;
    match iface {
        Some(i) => setup::run(
            Command::new(sensor)
                .args(["run", "--iface", i])
                .arg("--data-dir")
                .arg(workspace_root().join("data")),
        ),
        None => {
            require_root("cargo xtask run (the built-in lab)")?;
            live::run_lab(
                &sensor,
                listen,
                std::time::Duration::from_secs(every.max(5)),
            )
        }
    }
}

fn report_e2e(cases: &live::Cases) -> Result<()> {
    let mut failed = 0;
    for (name, ok, detail) in cases {
        println!(
            "e2e {name} ... {} ({detail})",
            if *ok { "ok" } else { "FAILED" }
        );
        failed += usize::from(!ok);
    }
    println!("e2e: {} passed, {failed} failed", cases.len() - failed);
    if failed > 0 {
        bail!("the lab end-to-end test failed (logs in target/lab/e2e)");
    }
    Ok(())
}

/// `../shared/corpora` next to the project root (CI lays it there too).
pub(crate) fn corpora() -> PathBuf {
    workspace_root().join("../shared/corpora")
}

/// Builds the release `sensor` binary and returns its path.
fn release_sensor() -> Result<PathBuf> {
    cargo_build(cargo().args(["build", "--release", "--package", "sensor"]))
        .context("building the sensor")?;
    Ok(target_dir().join("release/sensor"))
}

/// Runs a cargo build and passes its output on, except the eBPF build's: aya-build relays
/// every line of the nested cargo as a `warning: sensor@...:` line (dozens per build), shown
/// here as one line unless the build fails, when every held line is printed.
fn cargo_build(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let stderr = child.stderr.take().context("cargo stderr")?;
    let mut held = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo's output")?;
        if line.starts_with("warning: sensor@") {
            if held.is_empty() {
                eprintln!(
                    "   XDP program: sensor/build.rs (nightly toolchain, bpf-linker), output held unless it fails"
                );
            }
            held.push(line);
        } else {
            eprintln!("{line}");
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        for l in &held {
            eprintln!("{l}");
        }
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Builds and runs one of the benchmark binaries of `sensor-tests`.
fn bench_bin(name: &str, args: &[String]) -> Result<()> {
    cargo_build(cargo().args([
        "build",
        "--release",
        "--package",
        "sensor-tests",
        "--bin",
        name,
    ]))
    .with_context(|| format!("building {name}"))?;
    setup::run(Command::new(target_dir().join("release").join(name)).args(args))
        .with_context(|| name.to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Task::LabRole { args } = &cli.command {
        // Runs inside a lab namespace, many times: no set-up.
        return match lab::traffic::role(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lab-role: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `setup` always checks everything; other commands skip what a stamp says is done.
    let ready = match &cli.command {
        Task::Setup => setup::setup(),
        _ => setup::ensure(),
    };
    let result = ready.and_then(|()| match &cli.command {
        Task::Setup => Ok(()),
        Task::Test { args } => test(args),
        Task::ApiContract => {
            let detail = api_contract::run(&release_sensor()?, &corpora())?;
            println!("api contract: ok: {detail}");
            Ok(())
        }
        Task::Run {
            iface,
            listen,
            attack_every,
        } => run(iface.as_deref(), *listen, *attack_every),
        Task::Lab { command } => lab_command(command),
        Task::BenchLive { runs, only } => {
            require_root("bench-live")?;
            bench_live::bench_live(&release_sensor()?, *runs, only)
        }
        Task::E2e {
            benign_seconds,
            mitigation_only,
        } => {
            require_root("the end-to-end test")?;
            let sensor = release_sensor()?;
            let mut cases = if *mitigation_only {
                Vec::new()
            } else {
                live::e2e(&sensor, Duration::from_secs(*benign_seconds))?
            };
            cases.extend(e2e_mitigation::run(&sensor)?);
            report_e2e(&cases)
        }
        Task::LabRole { .. } => Ok(()),
        Task::BenchXdp { args } => bench_bin("bench_xdp", args),
        Task::BenchApi => bench_bin("bench_api", &[]),
        Task::Soak { minutes } => {
            require_root("the soak")?;
            soak::soak(&release_sensor()?, *minutes)
        }
        Task::Fuzz { targets, minutes } => {
            fuzz::fuzz(targets, (minutes * 60.0).round().max(1.0) as u64)
        }
        Task::BenchIforest { online, epochs } => {
            setup::python_package("sklearn", "scikit-learn")?;
            let mut args = vec!["--epochs".to_owned(), epochs.to_string()];
            if *online {
                args.push("--online".into());
            }
            bench_bin("bench_iforest", &args)
        }
        Task::CorpusCheck => corpus::corpus_check(&release_sensor()?, &corpora()),
        Task::Eval { lab } => {
            let sensor = release_sensor()?;
            let lab = match lab {
                Some(d) => Some(d.clone()),
                None => eval::lab_set_dir(is_root())?,
            };
            eval::eval(&sensor, &corpora(), lab.as_deref())
        }
        Task::BenchDryrun { history, runs } => {
            let history = history
                .clone()
                .unwrap_or_else(|| workspace_root().join("data/lab/history"));
            // Real captures, and a generated 1M-packet, 100k-flow one (the table's churn).
            let synthetic = target_dir().join("bench/synthetic-1m.pcap");
            if !synthetic.exists() {
                std::fs::create_dir_all(target_dir().join("bench"))?;
                bench_replay::synthetic(&synthetic, 100_000, 10)?;
            }
            let mut pcaps: Vec<PathBuf> = [
                "zeek/echo-connections.pcap",
                "generated/nmap_sS_top1000.pcap",
                "generated/hping3_synflood_20k.pcap",
            ]
            .iter()
            .map(|f| corpora().join(f))
            .filter(|p| p.exists())
            .collect();
            pcaps.push(synthetic);
            bench_dryrun::bench_dryrun(
                &release_sensor()?,
                &history,
                *runs,
                &pcaps,
                &target_dir().join("bench"),
            )
        }
        Task::BenchReplay { pcaps } => {
            // nfstream is measured when it installs; the bench says so when it does not.
            if let Err(e) = setup::python_package("nfstream", "nfstream") {
                eprintln!("xtask: {e:#}");
            }
            bench_replay::bench_replay(&release_sensor()?, pcaps, &target_dir().join("bench"))
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
