//! `sensor train`: fits the anomaly model on baseline (attack-free) captures, with the
//! config's `[flow]`, `[rules]` and `[model]` settings.

use std::path::{Path, PathBuf};

use crate::{
    config::Config,
    detect::ml::model::Model,
    drive::replay::{OnlineTrain, ReplayOptions, replay, train_online},
};

pub(super) fn run(pcaps: &[PathBuf], model: &Path, config: &Config) -> anyhow::Result<()> {
    let s = replay(pcaps, ReplayOptions::new(config).collecting(), Vec::new())?;
    let sources = pcaps.iter().map(|p| p.display().to_string()).collect();
    let params = config.model.forest();
    let mut m = Model::train(&s.features, params, config.model.contamination, sources)?;
    m.calibrate(
        &s.features,
        &s.feature_meta,
        config.model.budget(),
        config.rules.quiet_close_s * 1_000_000_000,
    );
    m.save(model)?;
    if let Some(note) = &m.threshold_note {
        eprintln!("train: NOTE: {note}");
    }
    let rule = match m.max_alerts_per_hour {
        Some(n) => format!("at most {n} model alerts/hour on the baseline"),
        None => format!("contamination {}", m.contamination),
    };
    eprintln!(
        "train: {} flows from {} packets; {} trees of sub-sample {}; {rule} -> threshold {:.4} ({} model alerts/hour expected on the baseline); wrote {}",
        s.features.len(),
        s.read.packets,
        params.trees,
        m.forest.psi,
        m.threshold,
        m.expected_alerts_per_hour.unwrap_or(0.0),
        model.display()
    );
    Ok(())
}

/// `sensor train --kind kitnet`: the online model, learnt event by event over the baseline.
pub(super) fn run_online(
    pcaps: &[PathBuf],
    model: &Path,
    config: &Config,
    epochs: usize,
) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let m = train_online(
        pcaps,
        config,
        OnlineTrain {
            params: crate::detect::ml::kitnet::KitParams {
                seed: config.model.seed,
                ..Default::default()
            },
            epochs,
            contamination: config.model.contamination,
            max_alerts_per_hour: config.model.budget(),
        },
    )?;
    m.save(model)?;
    if let Some(note) = &m.threshold_note {
        eprintln!("train: NOTE: {note}");
    }
    let rule = match m.max_alerts_per_hour {
        Some(n) => format!("at most {n} model alerts/hour on the baseline"),
        None => format!("contamination {}", m.contamination),
    };
    eprintln!(
        "train: online model (KitNET, {} autoencoders over {} features) from {} flow events, {epochs} pass(es) in {:.1} s; {rule} -> threshold {:.4} ({} model alerts/hour expected on the baseline); wrote {}",
        m.net.ensemble.len(),
        m.features.len(),
        m.training.events,
        start.elapsed().as_secs_f64(),
        m.threshold,
        m.expected_alerts_per_hour.unwrap_or(0.0),
        model.display()
    );
    Ok(())
}
