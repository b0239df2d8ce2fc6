//! Project tasks: `cargo xtask setup | test | run | bench-xdp`.

mod bench_replay;
mod corpus;
mod eval;
mod setup;

use std::{
    env,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
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
    /// Set up, build and run the live sensor on `--iface` (the built-in lab for runs without
    /// `--iface` comes with a later issue; until then this verifies the kernel program).
    Run {
        /// Interface to attach to; without it the built-in lab is used.
        #[arg(long)]
        iface: Option<String>,
    },
    /// Packets/s of `sensor replay` vs `tcpdump -r -w /dev/null` (default: echo-connections and
    /// a generated 1M-packet, 100k-flow capture).
    BenchReplay { pcaps: Vec<PathBuf> },
    /// Detection quality on the corpora: attack captures detected, false alerts on benign ones.
    Eval,
    /// This Isolation Forest vs scikit-learn's: scoring time per flow and ROC AUC, same run.
    BenchIforest,
    /// wrk against /api/alerts?limit=100 on 100k alerts and 1M flows while ingest runs.
    BenchApi,
    /// Compare `sensor replay` flow totals with nDPI's flow lists in ../shared/corpora/ndpi.
    CorpusCheck,
    /// BPF_PROG_TEST_RUN ns/packet of the sensor vs an empty XDP program, same run.
    BenchXdp {
        /// Arguments for the benchmark (--flows N --repeat N --rounds N --coarse-time).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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

fn test(args: &[String]) -> Result<()> {
    if is_root() {
        remove_stale_test_namespaces();
    }
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--exclude", "sensor-ebpf"])
        .args(args);
    // Kernel tests share kernel state (netns names, XDP dispatcher): one at a time.
    cmd.args(["--", "--test-threads=1"]);
    let ci = env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if is_root() || ci {
        // Here they can run, so a skip would hide a failure.
        cmd.env("SENSOR_REQUIRE_KERNEL_TESTS", "1");
    } else {
        eprintln!("xtask: not root: kernel tests will be skipped with a message");
    }
    // Echo cargo's output and add the per-binary results into one closing line, so the last
    // line of the run says how many tests ran (the last binary alone is often doc tests).
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
    // The oracle check runs only on a full run (no filter) and when the corpora are there.
    let oracle = if args.is_empty() && status.success() {
        Some(release_sensor().and_then(|sensor| {
            corpus::corpus_check(&sensor, &corpora())?;
            eval::eval(&sensor, &corpora())
        }))
    } else {
        None
    };
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    oracle.transpose()?;
    Ok(())
}

fn run(iface: Option<&str>) -> Result<()> {
    let sensor = release_sensor()?;
    match iface {
        Some(i) => setup::run(
            Command::new(sensor)
                .args(["run", "--iface", i])
                .arg("--data-dir")
                .arg(workspace_root().join("data")),
        ),
        None => {
            eprintln!(
                "xtask: the built-in lab (namespaces, veths, scheduled attacks) is not built yet (issue 6); \
                 use `cargo xtask run --iface IFACE`. Checking that the XDP program loads here instead."
            );
            setup::run(Command::new(sensor).arg("check"))
        }
    }
}

/// `../shared/corpora` next to the project root (CI lays it there too).
pub(crate) fn corpora() -> PathBuf {
    workspace_root().join("../shared/corpora")
}

/// Builds the release `sensor` binary and returns its path.
fn release_sensor() -> Result<PathBuf> {
    setup::run(cargo().args(["build", "--release", "--package", "sensor"]))
        .context("building the sensor")?;
    Ok(target_dir().join("release/sensor"))
}

/// Builds and runs one of the benchmark binaries of `sensor-tests`.
fn bench_bin(name: &str, args: &[String]) -> Result<()> {
    setup::run(cargo().args([
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
    let result = setup::setup().and_then(|()| match &cli.command {
        Task::Setup => Ok(()),
        Task::Test { args } => test(args),
        Task::Run { iface } => run(iface.as_deref()),
        Task::BenchXdp { args } => bench_bin("bench_xdp", args),
        Task::BenchApi => bench_bin("bench_api", &[]),
        Task::BenchIforest => {
            setup::python_package("sklearn", "scikit-learn")?;
            bench_bin("bench_iforest", &[])
        }
        Task::CorpusCheck => corpus::corpus_check(&release_sensor()?, &corpora()),
        Task::Eval => eval::eval(&release_sensor()?, &corpora()),
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
