//! `sensor train`: fits the anomaly model on baseline (attack-free) captures, with the
//! config's `[flow]`, `[rules]` and `[model]` settings.

use std::path::{Path, PathBuf};

use crate::{
    config::Config,
    detect::ml::model::Model,
    source::replay::{ReplayOptions, replay},
};

pub(super) fn run(pcaps: &[PathBuf], model: &Path, config: &Config) -> anyhow::Result<()> {
    let s = replay(pcaps, ReplayOptions::new(config).collecting(), Vec::new())?;
    let sources = pcaps.iter().map(|p| p.display().to_string()).collect();
    let params = config.model.forest();
    let m = Model::train(&s.features, params, config.model.contamination, sources)?;
    m.save(model)?;
    eprintln!(
        "train: {} flows from {} packets; {} trees of sub-sample {}; contamination {} -> threshold {:.4}; wrote {}",
        s.features.len(),
        s.read.packets,
        params.trees,
        m.forest.psi,
        m.contamination,
        m.threshold,
        model.display()
    );
    Ok(())
}
