//! Every kept fuzz input (`fuzz/regressions/TARGET/`: what once failed, now fixed) and every
//! seed (`fuzz/seeds/TARGET/`) through the same checks the fuzz targets run, on stable.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files: Vec<PathBuf> = ["regressions", "seeds"]
        .iter()
        .filter_map(|d| std::fs::read_dir(root.join(d).join(target)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no seeds for the {target} fuzz target under {}",
        root.display()
    );
    files
}

fn run(target: &str, check: fn(&[u8])) {
    for p in inputs(target) {
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        eprintln!("{target}: {}", p.display());
        check(&data);
    }
}

#[test]
fn packet_inputs() {
    run("packet", checks::packet);
}

#[test]
fn pcap_inputs() {
    run("pcap", checks::pcap);
}

#[test]
fn config_inputs() {
    run("config", checks::config);
}

#[test]
fn model_inputs() {
    run("model", checks::model);
}

#[test]
fn api_inputs() {
    run("api", checks::api);
}
