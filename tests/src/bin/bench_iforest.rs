//! `cargo xtask bench-iforest`: this Isolation Forest next to scikit-learn's on one feature
//! matrix, in one run: training and scoring time per flow (one core) and ROC AUC of both.
//!
//! Matrix: the finished flows of benign captures (label 0) and of attack captures (label 1)
//! from `../shared/corpora`, featurised by the sensor's own pipeline. Both forests use 100
//! trees, sub-samples of 256 and the same seed, fitted on the whole (unlabelled) matrix.
//!
//! Online: the second model (KitNET over flow-event statistics) beside the forest, trained on
//! the same benign corpora, scored on the same held-out captures (`--online` runs only this
//! part, `--epochs N` sets its passes over the baseline).
//!
//! Held out: both forests fitted on the benign corpora alone (the baseline an operator trains
//! on), then scored on captures neither saw: the lab evaluation set's benign recordings and its
//! attack families plus the corpora's attack captures. Per family, the ROC AUC of the per-flow
//! score (family flows against the held-out benign flows), side by side; and the sensor's
//! model alerts on the held-out benign recordings, at the contamination threshold and at a
//! false-alert budget of 20 per hour.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use ndarray::Array2;
use sensor::{
    config::Config,
    detect::ml::{
        features::N_FEATURES,
        iforest::{ForestParams, IsolationForest},
    },
    drive::replay::{ReplayOptions, replay},
};

const BENIGN: &[&str] = &[
    "zeek/echo-connections.pcap",
    "zeek/web.pcap",
    "zeek/wikipedia.pcap",
    "generated/benign_http_200req.pcap",
];
const ATTACKS: &[&str] = &[
    "generated/nmap_sS_top1000.pcap",
    "generated/nmap_sT_connect.pcap",
    "generated/nmap_sU_udp100.pcap",
    "generated/nmap_sn_sweep_ip.pcap",
    "generated/hping3_synflood_20k.pcap",
];

fn rows(corpora: &Path, files: &[&str]) -> Result<Vec<[f64; N_FEATURES]>> {
    let paths: Vec<PathBuf> = files.iter().map(|f| corpora.join(f)).collect();
    let mut out = Vec::new();
    for p in paths {
        let s = replay(
            std::slice::from_ref(&p),
            ReplayOptions::new(&Config::default()).collecting(),
            Vec::new(),
        )?;
        out.extend(s.features);
    }
    Ok(out)
}

/// ROC AUC by the rank statistic (ties counted half).
fn auc(scores: &[f64], labels: &[u8]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&k| labels[idx[k]] == 1).count() as f64 * avg;
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Forests per side for the AUC (seeds seed..seed+SEEDS).
const SEEDS: u64 = 30;

const SKLEARN: &str = r#"
import sys, time, json
import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
d = np.loadtxt(sys.argv[1], delimiter=",")
x, y = d[:, :-1], d[:, -1]
seed = int(sys.argv[2])
SEEDS = int(sys.argv[3])
t = time.perf_counter()
f = IsolationForest(n_estimators=100, max_samples=256, random_state=seed, n_jobs=1).fit(x)
fit = time.perf_counter() - t
best = 1e9
for _ in range(5):
    t = time.perf_counter(); s = f.score_samples(x); best = min(best, time.perf_counter() - t)
one = []
for i in range(min(200, len(x))):
    t = time.perf_counter(); f.score_samples(x[i:i+1]); one.append(time.perf_counter() - t)
aucs = [roc_auc_score(y, -IsolationForest(n_estimators=100, max_samples=256, random_state=seed + k, n_jobs=1).fit(x).score_samples(x)) for k in range(SEEDS)]
print(json.dumps({"fit_s": fit, "batch_s": best, "single_s": float(np.median(one)), "auc": float(np.mean(aucs)), "auc_sd": float(np.std(aucs))}))
"#;

/// Families of attack captures: corpus files, and lab families by their truth-file name.
fn family_of(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    if n.contains("reflection") {
        "reflection (DNS, SYN-ACK; fast and slow)"
    } else if n.contains("sweep") || n.contains("sn_") {
        "host sweeps (fast and slow)"
    } else if n.contains("scan") || n.contains("nmap_s") {
        "port scans (SYN, connect, UDP, stealth, IPv6, slow)"
    } else {
        "floods (SYN, UDP, ICMP)"
    }
}

const HELD_OUT_SKLEARN: &str = r#"
import sys, json
import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
train = np.loadtxt(sys.argv[1], delimiter=",", ndmin=2)
test = np.loadtxt(sys.argv[2], delimiter=",", ndmin=2)
x, fam = test[:, :-1], test[:, -1].astype(int)
f = IsolationForest(n_estimators=100, max_samples=256, random_state=int(sys.argv[3]), n_jobs=1).fit(train)
s = -f.score_samples(x)
out = {}
for k in sorted(set(fam.tolist()) - {0}):
    m = (fam == 0) | (fam == k)
    out[str(k)] = float(roc_auc_score((fam[m] == k).astype(int), s[m]))
print(json.dumps(out))
"#;

/// Fit on the benign corpora, score the held-out captures: per-family AUC, ours and
/// scikit-learn's, and model alerts on the held-out benign recordings.
fn held_out(corpora: &Path, benign_train: &[[f64; N_FEATURES]], dir: &Path) -> Result<()> {
    let Some(HeldOut {
        benign: held_benign,
        attacks,
    }) = held_out_set(corpora)
    else {
        println!("held-out: SKIPPED: no lab evaluation set (cargo xtask lab record --eval)");
        return Ok(());
    };
    let featurise = |p: &Path| -> Result<Vec<[f64; N_FEATURES]>> {
        Ok(replay(
            std::slice::from_ref(&p.to_path_buf()),
            ReplayOptions::new(&Config::default()).collecting(),
            Vec::new(),
        )?
        .features)
    };
    let mut families: Vec<&'static str> = Vec::new();
    let mut test: Vec<([f64; N_FEATURES], usize)> = Vec::new();
    for p in &held_benign {
        test.extend(featurise(p)?.into_iter().map(|r| (r, 0)));
    }
    for (p, fam) in &attacks {
        let k = match families.iter().position(|f| f == fam) {
            Some(i) => i + 1,
            None => {
                families.push(fam);
                families.len()
            }
        };
        test.extend(featurise(p)?.into_iter().map(|r| (r, k)));
    }
    // Standardised by the training baseline, as the sensor's model does.
    let n = benign_train.len();
    let raw = Array2::from_shape_fn((n, N_FEATURES), |(i, j)| benign_train[i][j]);
    let mean = raw.mean_axis(ndarray::Axis(0)).context("empty matrix")?;
    let std = raw
        .std_axis(ndarray::Axis(0), 0.0)
        .mapv(|s| if s > 1e-12 { s } else { 1.0 });
    let x = (&raw - &mean) / &std;
    let t = Array2::from_shape_fn((test.len(), N_FEATURES), |(i, j)| test[i].0[j]);
    let tx = (&t - &mean) / &std;
    let params = ForestParams {
        trees: 100,
        sample_size: 256,
        seed: 42,
    };
    let forest = IsolationForest::fit(x.view(), params);
    let scores = forest.score_all(tx.view());
    let (train_csv, test_csv) = (
        dir.join("held-out-train.csv"),
        dir.join("held-out-test.csv"),
    );
    let mut text = String::new();
    for row in x.rows() {
        let v: Vec<String> = row.iter().map(f64::to_string).collect();
        writeln!(text, "{}", v.join(","))?;
    }
    std::fs::write(&train_csv, &text)?;
    text.clear();
    for (i, row) in tx.rows().into_iter().enumerate() {
        let v: Vec<String> = row.iter().map(f64::to_string).collect();
        writeln!(text, "{},{}", v.join(","), test[i].1)?;
    }
    std::fs::write(&test_csv, &text)?;
    let out = Command::new("python3")
        .args(["-c", HELD_OUT_SKLEARN])
        .arg(&train_csv)
        .arg(&test_csv)
        .arg(params.seed.to_string())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!(
            "scikit-learn held-out run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sk: serde_json::Value = serde_json::from_slice(&out.stdout).context("sklearn output")?;
    let benign_n = test.iter().filter(|r| r.1 == 0).count();
    println!(
        "held-out: fitted on {n} benign corpus flows; tested on {benign_n} flows of {} held-out benign lab recordings",
        held_benign.len()
    );
    println!("| attack family | flows | AUC ours | AUC sklearn |\n|---|---|---|---|");
    for (i, fam) in families.iter().enumerate() {
        let k = i + 1;
        let (s, l): (Vec<f64>, Vec<u8>) = test
            .iter()
            .zip(&scores)
            .filter(|((_, f), _)| *f == 0 || *f == k)
            .map(|((_, f), s)| (*s, u8::from(*f == k)))
            .unzip();
        let flows = l.iter().filter(|&&x| x == 1).count();
        println!(
            "| {fam} | {flows} | {:.4} | {:.4} |",
            auc(&s, &l),
            sk[k.to_string()].as_f64().unwrap_or(f64::NAN),
        );
    }
    // The sensor's own model (trained as `sensor train` does) on the held-out benign
    // recordings: model alerts raised, at the contamination threshold and at a budget.
    let train_files: Vec<PathBuf> = BENIGN.iter().map(|f| corpora.join(f)).collect();
    let base = replay(
        &train_files,
        ReplayOptions::new(&Config::default()).collecting(),
        Vec::new(),
    )?;
    let quiet = Config::default().rules.quiet_close_s * 1_000_000_000;
    for budget in [None, Some(20.0)] {
        let mut m =
            sensor::detect::ml::model::Model::train(&base.features, params, 0.1, Vec::new())?;
        m.calibrate(&base.features, &base.feature_meta, budget, quiet);
        let mut alerts = 0;
        for p in &held_benign {
            let s = replay(
                std::slice::from_ref(p),
                ReplayOptions::new(&Config::default()).with_model(Some(m.clone())),
                Vec::new(),
            )?;
            alerts += s
                .alerts
                .get(&sensor::detect::AlertKind::MlAnomaly)
                .copied()
                .unwrap_or(0);
        }
        println!(
            "model alerts on the held-out benign recordings: {alerts} ({}; threshold {:.4}, {:.1} alerts per baseline hour expected)",
            budget.map_or("contamination 0.1".to_owned(), |b| format!(
                "budget {b}/hour"
            )),
            m.threshold,
            m.expected_alerts_per_hour.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// The benign corpora both models train on: the web and echo captures and every nDPI capture
/// the sensor reads (real applications of all kinds).
fn baseline_files(corpora: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = BENIGN.iter().map(|f| corpora.join(f)).collect();
    let mut ndpi: Vec<PathBuf> = std::fs::read_dir(corpora.join("ndpi/pcap"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| sensor::source::pcap::open_file(p).is_ok())
        .collect();
    ndpi.sort();
    files.extend(ndpi);
    Ok(files)
}

/// The held-out test set: benign lab recordings and attack captures with their family.
struct HeldOut {
    benign: Vec<PathBuf>,
    attacks: Vec<(PathBuf, &'static str)>,
}

fn held_out_set(corpora: &Path) -> Option<HeldOut> {
    let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lab/eval-set");
    let text = std::fs::read_to_string(lab.join("eval_truth.json")).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut benign = Vec::new();
    let mut attacks: Vec<(PathBuf, &'static str)> = ATTACKS
        .iter()
        .chain(
            [
                "generated/hping3_udpflood_20k.pcap",
                "generated/hping3_icmpflood_20k.pcap",
            ]
            .iter(),
        )
        .map(|f| (corpora.join(f), family_of(f)))
        .collect();
    for c in doc["cases"].as_array().into_iter().flatten() {
        let file = lab.join(c["file"].as_str().unwrap_or_default());
        if c["benign"] == true {
            benign.push(file);
        } else {
            attacks.push((file, family_of(c["file"].as_str().unwrap_or_default())));
        }
    }
    Some(HeldOut { benign, attacks })
}

/// Which model a replay runs besides the rules.
#[derive(Clone)]
enum Second {
    None,
    Forest(sensor::detect::ml::model::Model),
    Online(sensor::detect::ml::online::OnlineModel),
}

/// Replays `p` with the rules and `m`: per-flow scores, model alerts, flow events, packets.
fn scored(p: &Path, m: &Second) -> Result<(Vec<f64>, u64, u64, u64)> {
    let cfg = Config::default();
    let mut opts = ReplayOptions::new(&cfg);
    match m {
        Second::None => {}
        Second::Forest(f) => opts = opts.with_model(Some(f.clone())),
        Second::Online(o) => {
            opts = opts.with_online(Some(sensor::detect::ml::online::Online::judge(
                o.clone(),
                cfg.rules.max_tracked,
            )));
        }
    }
    let mut sink = sensor_tests::FlowRecords::default();
    let s = replay(
        std::slice::from_ref(&p.to_path_buf()),
        opts,
        vec![Box::new(&mut sink) as Box<dyn sensor::sink::Sink + '_>],
    )?;
    let alerts = s
        .alerts
        .get(&sensor::detect::AlertKind::MlAnomaly)
        .copied()
        .unwrap_or(0);
    let events = s.online.as_ref().map_or(0, |o| o.events);
    let scores = sink.0.iter().map(|r| r.score.unwrap_or(0.0)).collect();
    Ok((scores, alerts, events, s.read.packets))
}

/// The online model (KitNET over event statistics) beside the forest, trained on the same
/// benign corpora and scored on the same held-out captures: per-family AUC of the per-flow
/// score (a flow's highest event score), model alerts on the held-out benign recordings, and
/// the cost of each model per packet and per flow event on the path users run.
fn online_side_by_side(corpora: &Path, epochs: usize) -> Result<()> {
    let Some(HeldOut { benign, attacks }) = held_out_set(corpora) else {
        println!("online: SKIPPED: no lab evaluation set (cargo xtask lab record --eval)");
        return Ok(());
    };
    let cfg = Config::default();
    let train_files = baseline_files(corpora)?;
    let params = ForestParams {
        trees: 100,
        sample_size: 256,
        seed: 42,
    };
    let quiet = cfg.rules.quiet_close_s * 1_000_000_000;
    let t = Instant::now();
    let base = replay(
        &train_files,
        ReplayOptions::new(&cfg).collecting(),
        Vec::new(),
    )?;
    let mut forest =
        sensor::detect::ml::model::Model::train(&base.features, params, 0.1, Vec::new())?;
    forest.calibrate(&base.features, &base.feature_meta, None, quiet);
    let forest_s = t.elapsed().as_secs_f64();
    let train = |budget: Option<f64>| {
        sensor::drive::replay::train_online(
            &train_files,
            &cfg,
            sensor::drive::replay::OnlineTrain {
                params: Default::default(),
                epochs,
                contamination: 0.1,
                max_alerts_per_hour: budget,
            },
        )
    };
    let t = Instant::now();
    let online = train(None)?;
    let online_s = t.elapsed().as_secs_f64();
    println!(
        "online: KitNET with {} autoencoders over {} features, trained on {} baseline flow events ({epochs} pass(es), {:.2} s; the forest {:.2} s); threshold {:.4}",
        online.net.ensemble.len(),
        online.features.len(),
        online.training.events,
        online_s,
        forest_s,
        online.threshold
    );
    let models = [
        Second::Forest(forest.clone()),
        Second::Online(online.clone()),
    ];
    let mut benign_scores: [Vec<f64>; 2] = Default::default();
    for p in &benign {
        for (i, m) in models.iter().enumerate() {
            benign_scores[i].extend(scored(p, m)?.0);
        }
    }
    let mut fams: Vec<(&'static str, [Vec<f64>; 2])> = Vec::new();
    for (p, fam) in &attacks {
        let k = match fams.iter().position(|f| f.0 == *fam) {
            Some(i) => i,
            None => {
                fams.push((fam, Default::default()));
                fams.len() - 1
            }
        };
        for (i, m) in models.iter().enumerate() {
            let s = scored(p, m)?.0;
            fams[k].1[i].extend(s);
        }
    }
    println!("| attack family | flows | AUC forest | AUC online (KitNET) |\n|---|---|---|---|");
    for (fam, s) in &fams {
        let a = |i: usize| {
            let mut all = benign_scores[i].clone();
            all.extend(&s[i]);
            let mut l = vec![0u8; benign_scores[i].len()];
            l.extend(std::iter::repeat_n(1u8, s[i].len()));
            auc(&all, &l)
        };
        println!("| {fam} | {} | {:.4} | {:.4} |", s[0].len(), a(0), a(1));
    }
    // Model alerts on the held-out benign recordings: contamination 0.1 and a 20/h budget.
    let budgeted = train(Some(20.0))?;
    let mut fb = forest.clone();
    fb.calibrate(&base.features, &base.feature_meta, Some(20.0), quiet);
    for (name, f, o) in [
        ("contamination 0.1", &forest, &online),
        ("budget 20/hour", &fb, &budgeted),
    ] {
        let (mut af, mut ao) = (0, 0);
        for p in &benign {
            af += scored(p, &Second::Forest(f.clone()))?.1;
            ao += scored(p, &Second::Online(o.clone()))?.1;
        }
        println!(
            "model alerts on the held-out benign recordings at {name}: forest {af} (threshold {:.4}, {:.1}/h expected), online {ao} (threshold {:.4}, {:.1}/h expected)",
            f.threshold,
            f.expected_alerts_per_hour.unwrap_or(f64::NAN),
            o.threshold,
            o.expected_alerts_per_hour.unwrap_or(f64::NAN)
        );
    }
    // Cost on the path users run (replay with the rules), every held-out capture, best of 3.
    let all: Vec<PathBuf> = benign
        .iter()
        .cloned()
        .chain(attacks.iter().map(|a| a.0.clone()))
        .collect();
    let mut times = [f64::INFINITY; 3];
    let (mut packets, mut events, mut flows) = (0u64, 0u64, 0u64);
    for round in 0..3 {
        for (i, m) in [Second::None, models[0].clone(), models[1].clone()]
            .iter()
            .enumerate()
        {
            let t = Instant::now();
            let (mut p, mut e, mut f) = (0, 0, 0);
            for path in &all {
                let r = scored(path, m)?;
                f += r.0.len() as u64;
                e += r.2;
                p += r.3;
            }
            times[i] = times[i].min(t.elapsed().as_secs_f64());
            if round == 0 && i == 2 {
                (packets, events, flows) = (p, e, f);
            }
        }
    }
    let extra = |i: usize| (times[i] - times[0]).max(0.0);
    println!(
        "cost (replay with the rules, {packets} packets, {flows} flows, {events} flow events): rules only {:.3} s; + forest {:.3} s ({:.2} us/flow, {:.1} ns/packet); + online {:.3} s ({:.2} us/event, {:.1} ns/packet)",
        times[0],
        times[1],
        extra(1) / flows.max(1) as f64 * 1e6,
        extra(1) / packets.max(1) as f64 * 1e9,
        times[2],
        extra(2) / events.max(1) as f64 * 1e6,
        extra(2) / packets.max(1) as f64 * 1e9,
    );
    Ok(())
}

fn main() -> Result<()> {
    let corpora = sensor_tests::corpora().context("../shared/corpora is needed")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let epochs = args
        .iter()
        .position(|a| a == "--epochs")
        .and_then(|i| args.get(i + 1))
        .and_then(|e| e.parse().ok())
        .unwrap_or(1);
    if args.iter().any(|a| a == "--online") {
        return online_side_by_side(&corpora, epochs);
    }
    let mut benign = rows(&corpora, BENIGN)?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    // Plus every nDPI capture: real applications of all kinds, all benign.
    let mut ndpi: Vec<String> = std::fs::read_dir(corpora.join("ndpi/pcap"))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .map(|n| format!("ndpi/pcap/{n}"))
        .collect();
    ndpi.sort();
    for f in &ndpi {
        // Captures the sensor refuses (unsupported link types) add nothing.
        if let Ok(r) = rows(&corpora, &[f.as_str()]) {
            benign.extend(r);
        }
    }
    // Anomalies are the minority: keep every k-th attack flow, for about 10% of the matrix.
    held_out(&corpora, &benign, &dir)?;
    let all_attacks = rows(&corpora, ATTACKS)?;
    let k = (all_attacks.len() * 9 / benign.len().max(1)).max(1);
    let attacks: Vec<_> = all_attacks.into_iter().step_by(k).collect();
    let n = benign.len() + attacks.len();
    let mut labels = vec![0u8; benign.len()];
    labels.extend(std::iter::repeat_n(1u8, attacks.len()));
    let all: Vec<[f64; N_FEATURES]> = benign.into_iter().chain(attacks).collect();
    // Both forests see the same standardised matrix.
    let raw = Array2::from_shape_fn((n, N_FEATURES), |(i, j)| all[i][j]);
    let mean = raw.mean_axis(ndarray::Axis(0)).context("empty matrix")?;
    let std = raw
        .std_axis(ndarray::Axis(0), 0.0)
        .mapv(|s| if s > 1e-12 { s } else { 1.0 });
    let x = (&raw - &mean) / &std;
    println!(
        "matrix: {n} flows x {N_FEATURES} features ({} attack flows)",
        labels.iter().filter(|&&l| l == 1).count()
    );

    let params = ForestParams {
        trees: 100,
        sample_size: 256,
        seed: 42,
    };
    let t = Instant::now();
    let forest = IsolationForest::fit(x.view(), params);
    let fit_s = t.elapsed().as_secs_f64();
    let mut batch_s = f64::INFINITY;
    let mut scores = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        scores = forest.score_all(x.view());
        batch_s = batch_s.min(t.elapsed().as_secs_f64());
    }
    // AUC varies with the seed on a few hundred anomalies: average SEEDS forests, both sides.
    let aucs: Vec<f64> = (0..SEEDS)
        .map(|k| {
            let f = IsolationForest::fit(
                x.view(),
                ForestParams {
                    seed: params.seed + k,
                    ..params
                },
            );
            auc(&f.score_all(x.view()), &labels)
        })
        .collect();
    let ours_auc = aucs.iter().sum::<f64>() / aucs.len() as f64;
    let ours_sd =
        (aucs.iter().map(|a| (a - ours_auc).powi(2)).sum::<f64>() / aucs.len() as f64).sqrt();
    let first_auc = auc(&scores, &labels);

    let csv = dir.join("iforest-matrix.csv");
    let mut text = String::new();
    for (i, row) in x.rows().into_iter().enumerate() {
        for v in row {
            write!(text, "{v},")?;
        }
        writeln!(text, "{}", labels[i])?;
    }
    std::fs::write(&csv, text)?;
    let out = Command::new("python3")
        .args(["-c", SKLEARN])
        .arg(&csv)
        .arg(params.seed.to_string())
        .arg(SEEDS.to_string())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!(
            "scikit-learn run failed (pip install scikit-learn): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sk: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("scikit-learn output")?;
    let f = |k: &str| sk[k].as_f64().unwrap_or(f64::NAN);
    let per = |s: f64| s / n as f64 * 1e6;
    let t = Instant::now();
    let singles = x.nrows().min(200);
    for r in x.rows().into_iter().take(singles) {
        std::hint::black_box(forest.score(r));
    }
    let single_us = t.elapsed().as_secs_f64() / singles as f64 * 1e6;
    println!(
        "ours:    fit {:.1} ms, score {:.3} us/flow (batch), {single_us:.2} us for one flow, AUC {ours_auc:.4} +- {ours_sd:.4} over {SEEDS} seeds (seed {}: {first_auc:.4})",
        fit_s * 1e3,
        per(batch_s),
        params.seed
    );
    println!(
        "sklearn: fit {:.1} ms, score {:.3} us/flow (batch), {:.1} us for one flow, AUC {:.4} +- {:.4} over {SEEDS} seeds",
        f("fit_s") * 1e3,
        per(f("batch_s")),
        f("single_s") * 1e6,
        f("auc"),
        f("auc_sd")
    );
    println!(
        "one flow at a time (the sensor's case): ours {single_us:.2} us, sklearn {:.1} us: {:.0}x",
        f("single_s") * 1e6,
        f("single_s") * 1e6 / single_us
    );
    println!(
        "iforest: us/flow ours={:.3} sklearn={:.3} speedup={:.1}x auc ours={ours_auc:.4} sklearn={:.4} diff={:.4}",
        per(batch_s),
        per(f("batch_s")),
        f("batch_s") / batch_s,
        f("auc"),
        ours_auc - f("auc")
    );
    online_side_by_side(&corpora, epochs)
}
