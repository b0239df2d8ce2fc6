//! Rules changed on a running sensor through the API, during a real SYN flood from the peer
//! namespace: a dry run over the history the sensor recorded says what a new operator rule
//! would raise; bad rules are refused with their line; applying swaps the rules live (the
//! flood's open incident survives and keeps growing, the new rule fires on the same flood),
//! rewrites the config file (other sections and comments kept, the previous file beside it)
//! and leaves an audit row saying who and what.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sensor::{kernel::KernelConfig, source::attached::CaptureMode};
use sensor_tests::{agent::Agent, load_or_skip, netns::VethPair};
use serde_json::{Value, json};

const CONFIG: &str = "# the test's sensor\n[rules]\nport_scan_ports = 25\n\n\
                      [mitigation]\n# blocks expire\nttl_s = 120\n";

/// An operator rule the built-ins do not name: connection attempts to a web port, counted per
/// destination.
const RULE: &str = "[[rules.custom]]\nname = \"web_syn_burst\"\nproto = \"tcp\"\n\
                    dst_ports = [80]\nsyn_only = true\ncount = \"packets\"\nper = \"dst\"\n\
                    window_s = 10\nthreshold = 1000\nseverity = \"high\"\n\n\
                    [rules]\nport_scan_ports = 25\n";

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn alerts(agent: &Agent, kind: &str) -> Vec<Value> {
    let (code, v) = agent.send("GET", &format!("/api/alerts?kind={kind}&limit=100"), None);
    assert_eq!(code, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn rules_applied_during_a_flood_keep_its_incident_and_are_audited() {
    if load_or_skip("rules applied live", KernelConfig::default()).is_none() {
        return;
    }
    if !std::path::Path::new("/usr/sbin/hping3").exists() {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "hping3 missing (cargo xtask setup installs it)"
        );
        sensor_tests::skip("rules applied live", "no hping3");
        return;
    }
    let lab = VethPair::create();
    let agent = Agent::start_with_file(
        "rules-apply",
        vec![lab.local.to_owned()],
        CaptureMode::Auto,
        CONFIG,
    );
    let victim = lab.local_addr.to_string();
    // ~2,000 SYNs/s to port 80 for 25 s.
    let mut flood = Command::new("ip")
        .args(["netns", "exec", &lab.peer.name, "timeout", "25", "hping3"])
        .args(["-q", "-S", "-p", "80", "-i", "u500", &victim])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hping3");
    let open = |a: &Value| a["state"] == "open" && a["dst_ip"] == victim.as_str();
    let incident = wait_for("the flood's open syn_flood alert", 20, || {
        alerts(&agent, "syn_flood").into_iter().find(open)
    });
    let id = incident["id"].as_i64().expect("id");

    // A dry run over the last two minutes of recorded history: the rule would raise an alert
    // about the victim, the flood's alert stays.
    let from = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 120)
        .to_string();
    let body = json!({ "toml": RULE, "from": from }).to_string();
    let (code, dry) = agent.send("POST", "/api/rules/dry-run", Some(&body));
    assert_eq!(code, 200, "{dry}");
    let kinds = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["kind"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        kinds(&dry["would_raise"]).contains(&"web_syn_burst".to_owned()),
        "{dry}"
    );
    assert!(
        kinds(&dry["unchanged"]).contains(&"syn_flood".to_owned()),
        "{dry}"
    );
    assert!(
        kinds(&dry["fired"]).contains(&"syn_flood".to_owned()),
        "{dry}"
    );
    assert!(dry["history"]["events"].as_u64().unwrap_or(0) > 0, "{dry}");

    // Refused, nothing changed: a bad value (its line named), no name for the audit.
    let bad = json!({ "toml": "[rules]\nport_scan_ports = -1\n", "actor": "t" }).to_string();
    let (code, v) = agent.send("PUT", "/api/rules", Some(&bad));
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("line 2"),
        "{v}"
    );
    let nobody = json!({ "toml": RULE, "actor": " " }).to_string();
    let (code, v) = agent.send("PUT", "/api/rules", Some(&nobody));
    assert_eq!(code, 400, "{v}");
    let path = agent.dir.join("sensor.toml");
    assert_eq!(std::fs::read_to_string(&path).expect("config"), CONFIG);

    // Apply while the flood runs.
    let before = incident["count"].as_u64().unwrap_or(0);
    let apply = json!({ "toml": RULE, "actor": "test-operator" }).to_string();
    let (code, v) = agent.send("PUT", "/api/rules", Some(&apply));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["applied"], true, "{v}");
    assert!(
        v["change_id"].as_i64().is_some(),
        "the audit row is named: {v}"
    );
    assert!(
        v["changes"]
            .to_string()
            .contains("operator rule `web_syn_burst` added"),
        "{v}"
    );
    // The incident survives: the same alert, open, its count still growing; no second one.
    let grown = wait_for("the open incident to grow after the apply", 15, || {
        let (_, a) = agent.send("GET", &format!("/api/alerts/{id}"), None);
        let a = a["alert"].clone();
        (a["state"] == "open" && a["count"].as_u64().unwrap_or(0) > before).then_some(a)
    });
    assert_eq!(grown["kind"], "syn_flood");
    let opened: Vec<Value> = alerts(&agent, "syn_flood")
        .into_iter()
        .filter(open)
        .collect();
    assert_eq!(opened.len(), 1, "one incident for one flood: {opened:?}");
    // The new rule fires on the same flood.
    let rule = wait_for("the operator rule's alert", 15, || {
        alerts(&agent, "web_syn_burst").into_iter().next()
    });
    assert_eq!(rule["dst_ip"], victim.as_str(), "{rule}");
    assert_eq!(rule["severity"], "high", "{rule}");

    // The file: rules replaced, the rest kept, the previous file beside it.
    let text = std::fs::read_to_string(&path).expect("config");
    assert!(text.contains("name = \"web_syn_burst\""), "{text}");
    assert!(text.contains("# blocks expire\nttl_s = 120"), "{text}");
    assert_eq!(
        std::fs::read_to_string(agent.dir.join("sensor.toml.prev")).expect("previous"),
        CONFIG
    );
    // The audit row, and the rules in force.
    let (code, changes) = agent.send("GET", "/api/rules/changes", None);
    assert_eq!(code, 200, "{changes}");
    let row = &changes["items"][0];
    assert_eq!(row["id"], v["change_id"], "{changes}");
    assert_eq!(row["actor"], "test-operator", "{changes}");
    assert_eq!(row["remote"], "127.0.0.1", "{changes}");
    assert!(
        row["after"]
            .as_str()
            .unwrap_or_default()
            .contains("web_syn_burst"),
        "{changes}"
    );
    let (_, now) = agent.send("GET", "/api/rules", None);
    assert_eq!(now["rules"]["custom"][0]["name"], "web_syn_burst", "{now}");
    // Applying the same rules again changes nothing and writes nothing.
    let (code, v) = agent.send("PUT", "/api/rules", Some(&apply));
    assert_eq!((code, v["applied"].clone()), (200, json!(false)), "{v}");
    let _ignored = flood.kill();
    let _ignored = flood.wait();
    drop(agent);
}
