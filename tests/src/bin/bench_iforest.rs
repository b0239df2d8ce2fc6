//! `cargo xtask bench-iforest`: this Isolation Forest next to scikit-learn's on one feature
//! matrix, in one run: training and scoring time per flow (one core) and ROC AUC of both.
//!
//! Matrix: the finished flows of benign captures (label 0) and of attack captures (label 1)
//! from `../shared/corpora`, featurised by the sensor's own pipeline. Both forests use 100
//! trees, sub-samples of 256 and the same seed, fitted on the whole (unlabelled) matrix.

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
    source::replay::{ReplayOptions, replay},
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
const SEEDS: u64 = 10;

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

fn main() -> Result<()> {
    let corpora = sensor_tests::corpora().context("../shared/corpora is needed")?;
    let mut benign = rows(&corpora, BENIGN)?;
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

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
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
    Ok(())
}
