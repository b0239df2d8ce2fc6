//! The dashboard's capture controls in a real browser, the old tool's main workflow: open the
//! page of an idle `sensor run`, pick an interface, Start capture, see it attached (on the page
//! and in the kernel), Stop. Headless Chromium is driven over the W3C WebDriver protocol
//! (chromedriver); a screenshot goes to target/dashboard-controls.png.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use sensor::{kernel::KernelConfig, source::attached::CaptureMode};
use sensor_tests::{
    agent::{Agent, TOKEN, xdp_on},
    load_or_skip,
    netns::VethPair,
    try_http,
};
use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver with one headless Chromium session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
}

impl Browser {
    fn start() -> Option<Self> {
        let (Ok(_), Ok(_)) = (
            std::fs::metadata("/usr/bin/chromedriver"),
            std::fs::metadata("/usr/bin/chromium"),
        ) else {
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let base = format!("http://{addr}");
        let up = Instant::now();
        while try_http(addr, "GET", "/status", None, None).is_err() {
            assert!(
                up.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on {base}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = std::env::temp_dir().join(format!("sensor-webdriver-{}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&profile);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1400,1600",
                         format!("--user-data-dir={}", profile.display())],
            }
        }}});
        let mut b = Self {
            driver,
            base,
            session: String::new(),
            profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        Some(b)
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let mut resp = match method {
            "GET" => agent.get(&url).call(),
            "DELETE" => agent.delete(&url).call(),
            _ => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let text = resp.body_mut().read_to_string().expect("WebDriver body");
        let v: Value = serde_json::from_str(&text).expect("WebDriver JSON");
        assert!(
            resp.status().is_success(),
            "WebDriver {method} {path}: {text}"
        );
        v["value"].clone()
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}/{what}", self.session), body)
    }

    fn script(&self, js: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            Some(json!({"script": js, "args": args})),
        )
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("element/{id}/click"), None);
    }

    fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.cmd("GET", &format!("element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (at most 20 s) until `ok` holds, re-reading through the browser.
    fn wait_for(&self, what: &str, mut ok: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}; page says: capture {:?}, message {:?}",
                self.text("#st-capture"),
                self.text("#ctl-msg")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ignored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &format!("/session/{}", self.session), None)
            }));
        }
        let _ignored = self.driver.kill();
        let _ignored = self.driver.wait();
        let _ignored = std::fs::remove_dir_all(&self.profile);
    }
}

#[test]
fn dashboard_starts_and_stops_a_capture() {
    if load_or_skip("dashboard capture controls", KernelConfig::default()).is_none() {
        return;
    }
    let lab = VethPair::create();
    let agent = Agent::start("dash-controls", Vec::new(), CaptureMode::Auto);
    let Some(browser) = Browser::start() else {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "chromium or chromedriver is missing (cargo xtask setup installs them)"
        );
        sensor_tests::skip("dashboard capture controls", "no chromium/chromedriver");
        return;
    };
    let url = format!("http://{}/", agent.addr);
    browser.cmd("POST", "url", Some(json!({ "url": url })));
    // The token an operator types at the prompt, stored the way the page stores it.
    browser.script(
        "sessionStorage.setItem('sensor-token', arguments[0]); return true;",
        json!([TOKEN]),
    );
    browser.cmd("POST", "refresh", None);
    browser.wait_for("the idle status", |b| b.text("#st-capture") == "idle");

    let option = format!("#ctl-iface option[value='{}']", lab.local);
    browser.wait_for("the interface list", |b| {
        b.script(
            "return document.querySelector(arguments[0]) !== null;",
            json!([option]),
        ) == json!(true)
    });
    browser.click(&option);
    browser.click("#ctl-mode option[value='skb']");
    browser.click("#ctl-start");
    browser.wait_for("the attached status", |b| {
        b.text("#st-capture").contains(lab.local)
    });
    assert!(
        xdp_on(lab.local),
        "the page says attached, the kernel does not"
    );
    assert!(
        browser.text("#st-capture").contains("skb"),
        "{}",
        browser.text("#st-capture")
    );
    browser.wait_for("the interface marked as watched", |b| {
        b.text(&option).contains("watching")
    });
    let shot = browser.cmd("GET", "screenshot", None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap_or_default())
        .expect("screenshot is base64");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-controls.png");
    std::fs::write(&path, &png).expect("write screenshot");

    // Mitigation by hand: block the peer, see the row with its drop counters, remove it, see
    // the audit log say so.
    browser.wait_for("the mitigation section with XDP attached", |b| {
        b.text("#mit-state").contains("XDP attached")
    });
    let peer = format!("{}/32", lab.peer_addr);
    browser.script(
        "document.getElementById('mit-prefix').value = arguments[0]; return true;",
        json!([lab.peer_addr.to_string()]),
    );
    browser.click("#mit-block");
    browser.wait_for("the blocked peer listed", |b| {
        b.text("#t-blocklist tbody").contains(&peer)
    });
    lab.peer
        .send_udp(lab.peer_addr, lab.local_addr, 40000, 9, 30, 100);
    let sent = Instant::now();
    let mut dropped = false;
    while !dropped && sent.elapsed() < Duration::from_secs(10) {
        browser.script("loadMitigation(); return true;", json!([]));
        std::thread::sleep(Duration::from_millis(300));
        dropped = browser.text("#t-blocklist tbody").contains("30");
    }
    assert!(
        dropped,
        "the page does not show the 30 dropped datagrams: {}",
        browser.text("#t-blocklist tbody")
    );
    browser.click(".mit-remove");
    browser.wait_for("the removal in the mitigation log", |b| {
        b.text("#t-mitlog tbody").contains("unblock")
    });
    assert!(
        !browser.text("#t-blocklist tbody").contains(&peer),
        "still listed after Remove"
    );

    // An alert's packets: the peer scans (twice: the first scan is over before its alert
    // opens); the alert row gets a download button that fetches its pcap with the token.
    if std::path::Path::new("/usr/bin/nmap").exists() {
        let target = lab.local_addr.to_string();
        for ports in ["1-200", "201-300"] {
            lab.peer
                .exec(&["nmap", "-n", "-Pn", "-sS", "-p", ports, "-T4", &target]);
            std::thread::sleep(Duration::from_millis(300));
        }
        browser.wait_for("an alert row with a pcap button", |b| {
            b.script(
                "loadTables(); return document.querySelector('#t-alerts button.pcap') !== null;",
                json!([]),
            ) == json!(true)
        });
        // Clicked inside the page: the table is redrawn as alerts arrive, so a WebDriver
        // element found a moment before may be gone by the time it is clicked.
        browser.script(
            "document.querySelector('#t-alerts button.pcap').click(); return true;",
            json!([]),
        );
        browser.wait_for("the download done", |b| {
            b.text("#pcap-msg").starts_with("downloaded alert-")
        });
    }

    browser.click("#ctl-stop");
    browser.wait_for("the idle status after stop", |b| {
        b.text("#st-capture") == "idle"
    });
    assert!(!xdp_on(lab.local), "XDP still attached after Stop");
    drop(browser);
    drop(agent);
}

/// An operator watching a flood: its alert row is marked open, stays on top, and its count
/// and sentence change while the flood runs, from the event stream alone (no reload); the
/// row opens the alert's detail view, which names the victim and draws its timeline.
#[test]
fn a_running_floods_row_updates_in_place_and_opens_its_detail() {
    if load_or_skip("dashboard flood row", KernelConfig::default()).is_none() {
        return;
    }
    if !std::path::Path::new("/usr/sbin/hping3").exists() {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "hping3 missing (cargo xtask setup installs it)"
        );
        sensor_tests::skip("dashboard flood row", "no hping3");
        return;
    }
    let lab = VethPair::create();
    let agent = Agent::start("dash-flood", vec![lab.local.to_owned()], CaptureMode::Auto);
    let Some(browser) = Browser::start() else {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "chromium or chromedriver is missing (cargo xtask setup installs them)"
        );
        sensor_tests::skip("dashboard flood row", "no chromium/chromedriver");
        return;
    };
    browser.cmd(
        "POST",
        "url",
        Some(json!({ "url": format!("http://{}/", agent.addr) })),
    );
    // A SYN flood of ~2,000 packets/s for 12 s from the peer, in the background.
    let mut flood = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.peer.name,
            "timeout",
            "12",
            "hping3",
            "-q",
            "-S",
        ])
        .args(["-p", "80", "-i", "u500"])
        .arg(lab.local_addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hping3");
    let row = "#t-alerts tbody tr.alert-row.open";
    let count = |b: &Browser| -> (String, String) {
        let v = b.script(
            "const r = document.querySelector(arguments[0]); \
             return r ? [r.children[2].textContent, r.children[6].textContent, r.children[7].textContent] : null;",
            json!([row]),
        );
        (
            format!(
                "{} {}",
                v[0].as_str().unwrap_or_default(),
                v[1].as_str().unwrap_or_default()
            ),
            v[2].as_str().unwrap_or_default().to_owned(),
        )
    };
    browser.wait_for("an open syn_flood row", |b| {
        count(b).0.starts_with("syn_flood ")
    });
    let (first, _) = count(&browser);
    std::thread::sleep(Duration::from_millis(3000));
    let (later, sentence) = count(&browser);
    let n = |s: &str| -> u64 {
        s.split_whitespace()
            .nth(1)
            .map(|c| c.chars().filter(char::is_ascii_digit).collect::<String>())
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        n(&later) > n(&first),
        "the open row's count did not grow while the flood ran: {first:?} -> {later:?}"
    );
    assert!(
        sentence.starts_with("SYN flood into ") && sentence.contains(&lab.local_addr.to_string()),
        "{sentence}"
    );
    // Open on top: the first row of the table is the running incident.
    let top = browser.script(
        "return document.querySelector('#t-alerts tbody tr').classList.contains('open');",
        json!([]),
    );
    assert_eq!(
        top,
        json!(true),
        "the running incident is not the first row"
    );

    browser.script(
        "document.querySelector(arguments[0]).children[1].click(); return true;",
        json!([row]),
    );
    browser.wait_for("the detail view", |b| {
        b.text("#d-title").contains("syn_flood") && b.text("#d-title").contains("SYN flood into")
    });
    let drawn = browser.script(
        "return document.getElementById('detail').hidden === false && \
         document.getElementById('ch-detail').style.boxSizing !== undefined;",
        json!([]),
    );
    assert_eq!(drawn, json!(true));
    assert!(
        browser.text("#t-detail-fields tbody").contains("tcp_syn"),
        "{}",
        browser.text("#t-detail-fields tbody")
    );
    let shot = browser.cmd("GET", "screenshot", None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap_or_default())
        .expect("screenshot is base64");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-flood.png");
    std::fs::write(&path, &png).expect("write screenshot");
    let _ignored = flood.kill();
    let _ignored = flood.wait();
    drop(browser);
    drop(agent);
}

/// The rule editor in a real browser: a scan the sensor recorded; the operator raises the
/// port-scan thresholds in the form and dry-runs: the scan's alert is listed as one the change
/// would no longer raise, beside the alert the sensor did raise; Apply (with a name) shows the
/// change in the audit table and writes the config file. Screenshot: target/dashboard-rules.png.
#[test]
fn the_rule_editor_dry_runs_and_applies_a_change() {
    if load_or_skip("dashboard rule editor", KernelConfig::default()).is_none()
        || !sensor_tests::netns::have_nmap("dashboard rule editor")
    {
        return;
    }
    let lab = VethPair::create();
    let agent = Agent::start_with_file(
        "dash-rules",
        vec![lab.local.to_owned()],
        CaptureMode::Auto,
        "# the operator's file\n[rules]\nquiet_close_s = 30\n",
    );
    let Some(browser) = Browser::start() else {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "chromium or chromedriver is missing (cargo xtask setup installs them)"
        );
        sensor_tests::skip("dashboard rule editor", "no chromium/chromedriver");
        return;
    };
    lab.syn_scan("1-300");
    let start = Instant::now();
    loop {
        let v = sensor_tests::get_json(agent.addr, "/api/alerts?kind=port_scan");
        if v["items"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no port_scan alert for the scan: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    browser.cmd(
        "POST",
        "url",
        Some(json!({ "url": format!("http://{}/?live=0", agent.addr) })),
    );
    browser.script(
        "sessionStorage.setItem('sensor-token', arguments[0]); return true;",
        json!([TOKEN]),
    );
    browser.cmd("POST", "refresh", None);
    let field = "#t-thresholds input[data-key='port_scan_ports']";
    browser.wait_for("the thresholds form", |b| {
        b.script(
            "return document.querySelector(arguments[0]) !== null;",
            json!([field]),
        ) == json!(true)
    });
    // Typed by the operator: the field's value and its input event.
    for key in ["port_scan_ports", "slow_scan_ports"] {
        browser.script(
            "const i = document.querySelector(`#t-thresholds input[data-key='${arguments[0]}']`); \
             i.value = '5000'; i.dispatchEvent(new Event('input')); return true;",
            json!([key]),
        );
    }
    assert!(
        browser.script(
            "return document.querySelector(arguments[0]).closest('tr').classList.contains('changed');",
            json!([field])
        ) == json!(true),
        "a changed threshold is marked"
    );
    browser.click("#rules-dry");
    browser.wait_for("the dry run's result", |b| {
        b.text("#rules-msg").starts_with("dry run done")
    });
    browser.script(
        "document.getElementById('rules').scrollIntoView(); return true;",
        json!([]),
    );
    let gone = browser.text("#t-dry-gone tbody");
    assert!(
        gone.contains("port_scan"),
        "would no longer raise: {gone:?}"
    );
    let fired = browser.text("#t-dry-fired tbody");
    assert!(
        fired.contains("port_scan"),
        "raised by the sensor: {fired:?}"
    );
    let shot = browser.cmd("GET", "screenshot", None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap_or_default())
        .expect("screenshot is base64");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-rules.png");
    std::fs::write(&path, &png).expect("write screenshot");

    // Apply needs a name; with one, the change is live, audited and written.
    browser.click("#rules-apply");
    assert!(
        browser.text("#rules-msg").contains("enter your name"),
        "{}",
        browser.text("#rules-msg")
    );
    browser.script(
        "document.getElementById('rules-actor').value = 'dash-operator'; return true;",
        json!([]),
    );
    browser.click("#rules-apply");
    browser.wait_for("the apply's answer", |b| {
        b.text("#rules-msg").starts_with("applied")
    });
    browser.wait_for("the change in the audit table", |b| {
        let t = b.text("#t-rulechanges tbody");
        t.contains("dash-operator") && t.contains("port_scan_ports: 20 -> 5000")
    });
    let text = std::fs::read_to_string(agent.dir.join("sensor.toml")).expect("config");
    assert!(text.contains("port_scan_ports = 5000"), "{text}");
    assert!(text.contains("# the operator's file"), "{text}");
    let (_, rules) = agent.send("GET", "/api/rules", None);
    assert_eq!(rules["rules"]["port_scan_ports"], 5000, "{rules}");
    drop(browser);
    drop(agent);
}
