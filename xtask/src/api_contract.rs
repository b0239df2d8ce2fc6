//! The API's contract, checked the way a client meets it: `sensor serve` over a database of
//! real captures (scans, floods, a sweep, benign web traffic, with a model's anomalies), and
//! schemathesis generating requests from the OpenAPI document the server itself serves.
//!
//! Every documented response must match its schema, every status must be documented, no
//! request may get a 5xx, and what the schema rules out must be refused. One check is left
//! out: `positive_data_acceptance` (a schema-valid request must succeed), because some rules
//! are stated in words, not in the schema: a time is RFC 3339 or Unix seconds, an address is
//! IPv4 or IPv6, a cursor belongs to the sort it came from, training takes a path or a time
//! range. The server refuses such values with a 400 and a message, which the other checks see.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Captures of the shared corpus the database is filled from (skipped when absent).
const CAPTURES: &[&str] = &[
    "nmap_sS_top1000.pcap",
    "hping3_synflood_20k.pcap",
    "nmap_sn_sweep_ip.pcap",
    "nmap_sU_udp100.pcap",
    "benign_http_200req.pcap",
];
const BASELINE: &str = "benign_http_200req.pcap";
/// Examples per operation: ~1,500 requests over the 18 operations in about 10 s.
const EXAMPLES: &str = "30";
const TOKEN: &str = "api-contract-token-0123456789";

/// Runs the check; the detail line for the summary.
pub fn run(sensor: &Path, corpora: &Path) -> Result<String> {
    let st = crate::setup::schemathesis_bin();
    if !st.is_file() {
        bail!("{} is missing: run `cargo xtask setup`", st.display());
    }
    let dir = crate::target_dir().join("api-contract");
    let _ignored = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("sensor.db");
    let found: Vec<_> = CAPTURES
        .iter()
        .map(|c| corpora.join("generated").join(c))
        .filter(|p| p.is_file())
        .collect();
    if found.is_empty() {
        eprintln!(
            "api contract: no captures under {}: checking an empty database",
            corpora.display()
        );
    } else {
        let model = dir.join("model.json");
        let baseline = corpora.join("generated").join(BASELINE);
        let mut replay = Command::new(sensor);
        replay.arg("replay").arg("--db").arg(&db);
        if baseline.is_file() {
            quiet(
                Command::new(sensor)
                    .arg("train")
                    .arg("--model")
                    .arg(&model)
                    .arg(&baseline),
            )
            .context("training the model")?;
            replay.arg("--model").arg(&model);
        }
        quiet(replay.args(&found)).context("replaying the captures")?;
    }

    let mut serve = Command::new(sensor)
        .arg("serve")
        .arg("--data-dir")
        .arg(&dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--token")
        .arg(TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sensor serve")?;
    let result = (|| {
        // serve prints where it listens once the port is bound.
        let stderr = serve.stderr.take().context("serve stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .context("sensor serve ended before it listened")??;
            if let Some(u) = line.split("API on ").nth(1) {
                break u.trim().to_owned();
            }
        };
        // Keep reading the server's log so it never blocks on a full pipe.
        let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        let out = Command::new("timeout")
            .arg("600")
            .arg(&st)
            .arg("run")
            .arg(format!("{url}/api/openapi.json"))
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            // The event stream never ends; its first bytes are covered by the API tests.
            .args(["--exclude-path", "/api/events"])
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", EXAMPLES, "--generation-deterministic"])
            .args(["--phases", "examples,coverage,fuzzing", "--no-color"])
            .current_dir(&dir)
            .output()
            .context("starting schemathesis")?;
        let report = String::from_utf8_lossy(&out.stdout);
        std::fs::write(dir.join("schemathesis.log"), report.as_bytes())?;
        let _ = serve.kill();
        let server_log = log.join().unwrap_or_default();
        std::fs::write(dir.join("serve.log"), server_log.join("\n"))?;
        if !out.status.success() {
            println!("{report}");
            bail!(
                "schemathesis found the API off its document ({}; report in {})",
                out.status,
                dir.join("schemathesis.log").display()
            );
        }
        let cases = report
            .lines()
            .find(|l| l.contains(" generated,"))
            .map_or_else(String::new, |l| l.trim().to_owned());
        Ok(format!("{} captures replayed; {cases}", found.len()))
    })();
    let _ = serve.kill();
    let _ = serve.wait();
    result
}

/// Runs `cmd`, showing its output only when it fails.
fn quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
