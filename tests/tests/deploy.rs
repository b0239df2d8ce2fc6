//! The shipped systemd unit, judged by `systemd-analyze security` (offline: no running systemd
//! is needed): its exposure score stays low, and it keeps the capability set the sensor needs
//! and no more.

use std::path::{Path, PathBuf};

#[test]
fn the_systemd_unit_keeps_a_low_exposure_score() {
    if !Path::new("/usr/bin/systemd-analyze").exists() {
        sensor_tests::skip("systemd unit exposure", "no systemd-analyze");
        return;
    }
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/sensor.service");
    let text = std::fs::read_to_string(&unit).expect("deploy/sensor.service");
    // The analyser wants a unit file name; an instance template is named as installed.
    let dir = std::env::temp_dir().join(format!("sensor-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let installed = dir.join("gateway-sensor@.service");
    std::fs::write(&installed, &text).expect("copy");
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&installed)
        .output()
        .expect("systemd-analyze");
    let report = String::from_utf8_lossy(&out.stdout);
    std::fs::remove_dir_all(&dir).ok();
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {report}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.0, "exposure {score} (recorded 1.9):\n{report}");
    let caps = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a capability bounding set");
    assert_eq!(caps, "CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_RESOURCE");
    for must in [
        "NoNewPrivileges=yes",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "UMask=0077",
    ] {
        assert!(text.contains(must), "the unit lost {must}");
    }
}
