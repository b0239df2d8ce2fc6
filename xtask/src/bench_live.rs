//! `cargo xtask bench-live` (filled in below).
use std::path::Path;
use anyhow::Result;
pub fn bench_live(_sensor: &Path, _runs: usize, _only: &[String]) -> Result<()> {
    anyhow::bail!("not yet")
}
