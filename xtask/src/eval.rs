//! `cargo xtask eval`: detection quality on real captures with known ground truth.
//!
//! Attack captures must raise an alert of the right kind with the right attacker and victim;
//! benign captures must raise no attack alert (traffic spikes and model anomalies are not
//! attack verdicts and are reported, not counted). Ground truth is
//! `../shared/corpora/README.md` (the tables below transcribe it) and, for the captures the lab
//! records (`cargo xtask lab record --eval`), their `eval_truth.json`. The closing table gives
//! detected/total per attack family and false alerts per benign family.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// One attack capture: file, family (a row of the quality table), the alert kind it must
/// raise, attacker and victim the alert must name (`None`: not checked, many or n/a).
struct Attack {
    file: String,
    family: String,
    kind: String,
    src: Option<String>,
    dst: Option<String>,
}

/// (file, family, kind, attacker, victim) of a corpus attack capture.
type CorpusAttack = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// Attack captures of the shared corpora.
const CORPUS_ATTACKS: &[CorpusAttack] = &[
    (
        "generated/nmap_sS_top1000.pcap",
        "port scan (SYN, connect, UDP)",
        "port_scan",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "generated/nmap_sT_connect.pcap",
        "port scan (SYN, connect, UDP)",
        "port_scan",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "generated/nmap_sU_udp100.pcap",
        "port scan (SYN, connect, UDP)",
        "port_scan",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "generated/nmap_sn_sweep_arp.pcap",
        "host sweep (ARP; ICMP + TCP)",
        "host_sweep",
        Some("10.99.0.1"),
        None,
    ),
    (
        "generated/nmap_sn_sweep_ip.pcap",
        "host sweep (ARP; ICMP + TCP)",
        "host_sweep",
        Some("10.99.0.1"),
        None,
    ),
    (
        "generated/hping3_synflood_20k.pcap",
        "SYN flood",
        "syn_flood",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "suricata-verify/firewall/tcp-session-syn-flood-drop-precedence/input.pcap",
        "SYN flood",
        "syn_flood",
        Some("192.0.2.10"),
        Some("198.51.100.5"),
    ),
    (
        "generated/hping3_udpflood_20k.pcap",
        "UDP flood",
        "udp_flood",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
    (
        "suricata-verify/dhcp-request-flood/test.pcap",
        "UDP flood",
        "udp_flood",
        Some("0.0.0.0"),
        Some("255.255.255.255"),
    ),
    (
        "generated/hping3_icmpflood_20k.pcap",
        "ICMP flood",
        "icmp_flood",
        Some("10.99.0.1"),
        Some("10.99.0.2"),
    ),
];

/// Benign captures named one by one, with their family; every zeek and nDPI capture is
/// benign as well.
const BENIGN: &[(&str, &str)] = &[
    (
        "generated/benign_http_200req.pcap",
        "benign: generated (HTTP, iperf3 bulk)",
    ),
    (
        "generated/iperf3_tcp_3s_20k.pcap",
        "benign: generated (HTTP, iperf3 bulk)",
    ),
    (
        "suricata-verify/bug-4376/syn_retransmit_with_ts.pcap",
        "benign: suricata-verify",
    ),
    (
        "suricata-verify/detection_filter-distinct-dstport/input.pcap",
        "benign: suricata-verify",
    ),
    (
        "suricata-verify/detection_filter-distinct-srcport/input.pcap",
        "benign: suricata-verify",
    ),
];

/// Directories of the corpora whose every capture is benign.
const BENIGN_DIRS: &[(&str, &str)] = &[
    ("zeek", "benign: zeek traces"),
    ("ndpi/pcap", "benign: nDPI application captures"),
];

/// The lab's evaluation set under the target directory, recorded when absent or made by an
/// older recorder (`record`: root, the lab's tools installed), else `None` with the reason.
pub fn lab_set_dir(record: bool) -> Result<Option<PathBuf>> {
    let dir = crate::target_dir().join("lab/eval-set");
    let current = fs::read_to_string(dir.join(crate::lab::evalset::TRUTH))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["version"] == crate::lab::evalset::VERSION);
    if current {
        return Ok(Some(dir));
    }
    if !record {
        return Ok(None);
    }
    eprintln!(
        "eval: recording the lab evaluation set into {}",
        dir.display()
    );
    crate::lab::evalset::record(&dir).context("recording the lab evaluation set")?;
    Ok(Some(dir))
}

/// Kinds that are a verdict of attack.
const ATTACK_KINDS: &[&str] = &[
    "port_scan",
    "host_sweep",
    "syn_flood",
    "udp_flood",
    "icmp_flood",
    "ddos",
    "brute_force",
    "beaconing",
];

struct Seen {
    kind: String,
    src: Option<String>,
    dst: Option<String>,
    /// Model anomalies a rule alert absorbed.
    model_anomalies: u64,
    /// Folded into a larger incident (not an alert an operator reads on its own).
    merged: bool,
}

fn alerts(sensor: &Path, pcap: &Path, tmp: &Path) -> Result<Vec<Seen>> {
    alerts_with(sensor, pcap, tmp, None)
}

/// The alerts of `sensor replay PCAP` (with `model`, when given: the option that loads it and
/// its file).
fn alerts_with(
    sensor: &Path,
    pcap: &Path,
    tmp: &Path,
    model: Option<(&str, &Path)>,
) -> Result<Vec<Seen>> {
    let mut c = Command::new(sensor);
    c.arg("replay")
        .arg("--no-db")
        .arg(pcap)
        .arg("--alerts-jsonl")
        .arg(tmp);
    if let Some((flag, m)) = model {
        c.arg(flag).arg(m);
    }
    let out = c.output().context("running sensor replay")?;
    if !out.status.success() {
        // Unreadable captures (unsupported link types) have nothing to detect.
        return Ok(Vec::new());
    }
    let mut v = Vec::new();
    for line in fs::read_to_string(tmp)?.lines() {
        let a: serde_json::Value = serde_json::from_str(line).context("alert JSON")?;
        let s = |k: &str| a[k].as_str().map(str::to_owned);
        v.push(Seen {
            kind: s("kind").unwrap_or_default(),
            src: s("src_ip"),
            dst: s("dst_ip"),
            model_anomalies: a["evidence"]["model_anomalies"].as_u64().unwrap_or(0),
            merged: a["state"] == "merged",
        });
    }
    Ok(v)
}

fn kinds(v: &[Seen]) -> String {
    let mut k: Vec<&str> = v.iter().map(|a| a.kind.as_str()).collect();
    k.sort_unstable();
    k.dedup();
    if k.is_empty() {
        "-".into()
    } else {
        k.join(",")
    }
}

/// Attack and benign captures of a lab evaluation set (`cargo xtask lab record --eval`).
fn lab_set(dir: &Path) -> Result<(Vec<Attack>, Vec<Benign>)> {
    let path = dir.join(crate::lab::evalset::TRUTH);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let (mut attacks, mut benign) = (Vec::new(), Vec::new());
    for c in doc["cases"].as_array().into_iter().flatten() {
        let s = |k: &str| c[k].as_str().map(str::to_owned);
        let file = dir.join(s("file").context("a case without a file")?);
        let family = format!("{} (lab)", s("family").unwrap_or_default());
        match s("expected_alert") {
            Some(kind) => attacks.push(Attack {
                file: file.display().to_string(),
                family,
                kind,
                src: s("attacker"),
                dst: s("victim"),
            }),
            None => benign.push((file, family)),
        }
    }
    Ok((attacks, benign))
}

/// A benign capture and its family.
type Benign = (PathBuf, String);

/// A benign family: captures, and alerts counted on them.
type BenignCount = (String, usize, usize);

/// Per-family counts of the quality table, in first-seen order.
#[derive(Default)]
struct Families(Vec<(String, usize, usize)>);

impl Families {
    fn add(&mut self, family: &str, good: bool) {
        if let Some(f) = self.0.iter_mut().find(|f| f.0 == family) {
            f.1 += usize::from(good);
            f.2 += 1;
        } else {
            self.0.push((family.to_owned(), usize::from(good), 1));
        }
    }
}

/// Runs every attack and benign capture through `sensor replay` and prints the verdicts and
/// the per-family table; `lab` adds a recorded evaluation set.
pub fn eval(sensor: &Path, corpora: &Path, lab: Option<&Path>) -> Result<()> {
    let mut attacks: Vec<Attack> = Vec::new();
    let mut benign: Vec<Benign> = Vec::new();
    if corpora.is_dir() {
        attacks.extend(CORPUS_ATTACKS.iter().map(|(f, fam, k, s, d)| Attack {
            file: corpora.join(f).display().to_string(),
            family: (*fam).to_owned(),
            kind: (*k).to_owned(),
            src: s.map(str::to_owned),
            dst: d.map(str::to_owned),
        }));
        benign.extend(
            BENIGN
                .iter()
                .map(|(f, fam)| (corpora.join(f), (*fam).to_owned())),
        );
        for (dir, fam) in BENIGN_DIRS {
            if let Ok(rd) = fs::read_dir(corpora.join(dir)) {
                let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                files.sort();
                benign.extend(files.into_iter().map(|p| (p, (*fam).to_owned())));
            }
        }
    } else {
        println!("eval: {} is absent: corpus rows skipped", corpora.display());
    }
    match lab {
        Some(dir) => {
            let (a, b) = lab_set(dir)?;
            attacks.extend(a);
            benign.extend(b);
        }
        None => println!(
            "eval: no lab evaluation set (cargo xtask lab record --eval): lab rows skipped"
        ),
    }
    if attacks.is_empty() && benign.is_empty() {
        println!("eval: SKIPPED: nothing to evaluate");
        return Ok(());
    }
    let tmp = std::env::temp_dir().join(format!("sensor-eval-{}.jsonl", std::process::id()));
    let (mut detected, mut total) = (0, 0);
    let mut incidents: Vec<usize> = Vec::new();
    let mut table = Families::default();
    println!(
        "{:70} {:12} {:>6} detected",
        "attack capture", "expected", "alerts"
    );
    for a in &attacks {
        let path = Path::new(&a.file);
        if !path.is_file() {
            continue;
        }
        total += 1;
        let seen = alerts(sensor, path, &tmp)?;
        let hit = seen.iter().any(|s| {
            s.kind == a.kind
                && a.src.as_ref().is_none_or(|x| s.src.as_ref() == Some(x))
                && a.dst.as_ref().is_none_or(|x| s.dst.as_ref() == Some(x))
        });
        detected += usize::from(hit);
        table.add(&a.family, hit);
        // What an operator reads of this capture: its alerts, less those merged into another.
        let alerts = seen.iter().filter(|s| !s.merged).count();
        incidents.push(alerts);
        let shown = path
            .strip_prefix(corpora)
            .or_else(|_| path.strip_prefix(crate::target_dir()))
            .unwrap_or(path)
            .display()
            .to_string();
        println!(
            "{shown:70} {:12} {alerts:>6} {} {}",
            a.kind,
            kinds(&seen),
            if hit {
                "ok"
            } else {
                "MISSED (kind, attacker or victim)"
            }
        );
    }

    let mut false_alerts = 0;
    let mut other = 0;
    let mut benign_files = 0;
    let mut benign_table: Vec<(String, usize, usize)> = Vec::new();
    for (path, family) in &benign {
        if !path.is_file() {
            continue;
        }
        benign_files += 1;
        let seen = alerts(sensor, path, &tmp)?;
        let bad: Vec<&Seen> = seen
            .iter()
            .filter(|a| ATTACK_KINDS.contains(&a.kind.as_str()))
            .collect();
        other += seen.len() - bad.len();
        false_alerts += bad.len();
        match benign_table.iter_mut().find(|f| &f.0 == family) {
            Some(f) => {
                f.1 += 1;
                f.2 += bad.len();
            }
            None => benign_table.push((family.clone(), 1, bad.len())),
        }
        for a in bad {
            println!(
                "FALSE ALERT on benign {}: {} {:?} -> {:?}",
                path.display(),
                a.kind,
                a.src,
                a.dst
            );
        }
    }
    let _ignored = fs::remove_file(&tmp);
    println!();
    println!("{:58} {:>9}", "attack family", "detected");
    for (family, good, n) in &table.0 {
        println!("{family:58} {:>9}", format!("{good}/{n}"));
    }
    println!(
        "{:58} {:>9} {:>12}",
        "benign family", "captures", "false alerts"
    );
    for (family, n, bad) in &benign_table {
        println!("{family:58} {n:>9} {bad:>12}");
    }
    println!(
        "benign captures: {benign_files} ({other} non-attack alerts: traffic spikes, model anomalies)"
    );
    let one = incidents.iter().filter(|n| **n == 1).count();
    println!(
        "alerts per attack capture: {:.2} on average, {one} of {} with exactly one, at most {}",
        incidents.iter().sum::<usize>() as f64 / incidents.len().max(1) as f64,
        incidents.len(),
        incidents.iter().max().copied().unwrap_or(0)
    );
    println!(
        "eval: detected {detected}/{total} attack captures, false alerts {false_alerts} on {benign_files} benign captures"
    );
    model_report(sensor, corpora, &attacks, &benign, &tmp)?;
    if detected < total || false_alerts > 0 {
        bail!("detection quality below the bar");
    }
    Ok(())
}

/// The model's view of the same captures, reported (not a bar: model alerts are not attack
/// verdicts): trained as an operator would, on the corpora's benign web captures, at the
/// contamination threshold and at a budget of 20 model alerts an hour; per attack family the captures where the model
/// flagged the attack (an `ml_anomaly` alert, or anomalies attached to the rule's alert), and
/// per benign family the model alerts raised on captures it was not trained on.
fn model_report(
    sensor: &Path,
    corpora: &Path,
    attacks: &[Attack],
    benign: &[Benign],
    tmp: &Path,
) -> Result<()> {
    let train: Vec<PathBuf> = MODEL_BASELINE.iter().map(|f| corpora.join(f)).collect();
    if !train.iter().all(|p| p.is_file()) {
        println!("eval: model rows skipped (the corpora's benign web captures are absent)");
        return Ok(());
    }
    // Both models, each at two thresholds side by side: the contamination quantile (0.1) and
    // a budget of 20 model alerts per baseline hour.
    let mut columns: Vec<(Families, Vec<BenignCount>)> = Vec::new();
    for (kind, flag, budget) in [
        ("iforest", "--model", None),
        ("iforest", "--model", Some("20")),
        ("kitnet", "--online-model", None),
        ("kitnet", "--online-model", Some("20")),
    ] {
        let model = std::env::temp_dir().join(format!(
            "sensor-eval-model-{}-{kind}-{}.json",
            std::process::id(),
            budget.unwrap_or("c")
        ));
        let mut c = Command::new(sensor);
        c.arg("train")
            .args(&train)
            .arg("--kind")
            .arg(kind)
            .arg("--model")
            .arg(&model);
        match budget {
            Some(b) => c.args(["--max-alerts-per-hour", b]),
            None => c.args(["--contamination", "0.1"]),
        };
        let st = c
            .stderr(std::process::Stdio::null())
            .status()
            .context("running sensor train")?;
        if !st.success() {
            bail!("sensor train on {train:?} failed");
        }
        let mut hits = Families::default();
        for a in attacks {
            let path = Path::new(&a.file);
            if !path.is_file() {
                continue;
            }
            let seen = alerts_with(sensor, path, tmp, Some((flag, &model)))?;
            let hit = seen
                .iter()
                .any(|s| s.kind == "ml_anomaly" || s.model_anomalies > 0);
            hits.add(&a.family, hit);
        }
        let mut fams: Vec<BenignCount> = Vec::new();
        for (path, family) in benign {
            if !path.is_file() || train.contains(path) {
                continue;
            }
            let n = alerts_with(sensor, path, tmp, Some((flag, &model)))?
                .iter()
                .filter(|s| s.kind == "ml_anomaly")
                .count();
            match fams.iter_mut().find(|f| &f.0 == family) {
                Some(f) => {
                    f.1 += 1;
                    f.2 += n;
                }
                None => fams.push((family.clone(), 1, n)),
            }
        }
        let _ignored = fs::remove_file(&model);
        columns.push((hits, fams));
    }
    let [
        (hits_c, fams_c),
        (hits_b, fams_b),
        (hits_oc, fams_oc),
        (hits_ob, fams_ob),
    ] = &columns[..]
    else {
        return Ok(());
    };
    println!();
    println!(
        "{:60} {:>14} {:>14} {:>14} {:>14}",
        "models on the benign web baseline",
        "forest c=0.1",
        "forest 20/h",
        "online c=0.1",
        "online 20/h"
    );
    println!("{:60} (attack captures the model flagged)", "attack family");
    for (i, (family, good, n)) in hits_c.0.iter().enumerate() {
        let cell = |h: &Families| format!("{}/{n}", h.0.get(i).map_or(0, |f| f.1));
        println!(
            "{family:60} {:>14} {:>14} {:>14} {:>14}",
            format!("{good}/{n}"),
            cell(hits_b),
            cell(hits_oc),
            cell(hits_ob)
        );
    }
    println!("{:60} (model alerts raised, held out)", "benign family");
    for (i, (family, n, a)) in fams_c.iter().enumerate() {
        let cell = |f: &[BenignCount]| f.get(i).map_or(0, |f| f.2).to_string();
        println!(
            "{:60} {:>14} {:>14} {:>14} {:>14}",
            format!("{family} ({n} captures)"),
            a,
            cell(fams_b),
            cell(fams_oc),
            cell(fams_ob)
        );
    }
    Ok(())
}

/// What the model report trains on: benign web traffic, as an operator's baseline would be.
const MODEL_BASELINE: &[&str] = &[
    "zeek/wikipedia.pcap",
    "zeek/web.pcap",
    "generated/benign_http_200req.pcap",
];
