//! The HTTP API end to end: a real server on 127.0.0.1:0 over a database written through the
//! store, every endpoint, filters, cursor pagination, bad input, the token, the data-directory
//! jail, server-sent events and graceful shutdown.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use sensor::{
    api::ApiState,
    record::{AlertKind, AlertRecord, DetectorKind, Severity, StatsRow},
    sink::store::{Retention, Store},
};
use serde_json::{Value, json};

struct Server {
    addr: SocketAddr,
    token: String,
    dir: PathBuf,
    _server: sensor_tests::TestServer,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(name: &str, fill: impl FnOnce(&Store)) -> Server {
    start_with(name, sensor::config::Config::default(), fill)
}

fn start_with(name: &str, config: sensor::config::Config, fill: impl FnOnce(&Store)) -> Server {
    let dir = std::env::temp_dir().join(format!("sensor-api-{}-{name}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    let db = dir.join("sensor.db");
    {
        let store = Store::open(&db, Retention::default()).expect("open store");
        fill(&store);
        store.sync().expect("sync");
    }
    let token = "t0ken-for-tests-0123456789".to_string();
    let state = Arc::new(ApiState::read_only(db, dir.clone(), token.clone()).with_config(config));
    let server = sensor_tests::TestServer::start(state);
    Server {
        addr: server.addr,
        token,
        dir,
        _server: server,
    }
}

use sensor_tests::http;

fn get_json(srv: &Server, path: &str) -> Value {
    sensor_tests::get_json(srv.addr, path)
}

const T0: u64 = 1_700_000_000_000_000_000;

fn alert(i: u64, kind: AlertKind, severity: Severity, src: &str) -> (AlertRecord, u64) {
    let ts = T0 + i * 1_000_000_000;
    (
        AlertRecord {
            id: i,
            state: sensor::record::AlertState::Closed,
            merged_into: None,
            kind,
            severity,
            detector: DetectorKind::Rule,
            src_ip: Some(src.parse::<IpAddr>().expect("ip")),
            dst_ip: Some("10.0.0.2".parse().expect("ip")),
            first_seen: sensor::record::rfc3339_us(ts),
            last_seen: sensor::record::rfc3339_us(ts),
            count: 1,
            score: None,
            summary: String::new(),
            evidence: serde_json::json!({"n": i}),
            rate_history: Vec::new(),
            pcap: None,
            direction: None,
            hostgroup: None,
            remote: None,
        },
        ts,
    )
}

fn fill_alerts(store: &Store) {
    for i in 0..250 {
        let (kind, sev, src) = match i % 3 {
            0 => (AlertKind::PortScan, Severity::High, "10.0.0.1"),
            1 => (AlertKind::SynFlood, Severity::Critical, "10.0.0.3"),
            _ => (AlertKind::TrafficSpike, Severity::Low, "10.0.0.4"),
        };
        let (a, ts) = alert(i, kind, sev, src);
        store.alert(a, ts).expect("alert");
    }
    for s in 0..30 {
        store
            .stats_row(
                StatsRow {
                    ts: T0 + s * 1_000_000_000,
                    seconds: 1,
                    packets: 100,
                    bytes: 6000,
                    tcp: 60,
                    udp: 30,
                    icmp: 10,
                    other: 0,
                    flows: 2,
                },
                true,
            )
            .expect("stats");
    }
}

#[test]
fn read_endpoints_filters_and_cursor_pagination() {
    let srv = start("read", fill_alerts);
    // Pagination: newest first, 100 per page, every alert exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("/api/alerts?limit=100&cursor={c}"),
            None => "/api/alerts?limit=100".into(),
        };
        let page = get_json(&srv, &path);
        let items = page["items"].as_array().expect("items").clone();
        assert!(items.len() <= 100);
        seen.extend(items.iter().map(|a| a["id"].as_i64().expect("id")));
        match page["next_cursor"].as_i64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );

    let by_kind = get_json(&srv, "/api/alerts?kind=syn_flood&limit=1000");
    let items = by_kind["items"].as_array().expect("items");
    assert_eq!(items.len(), 83);
    assert!(
        items
            .iter()
            .all(|a| a["kind"] == "syn_flood" && a["severity"] == "critical")
    );
    assert_eq!(
        get_json(&srv, "/api/alerts?severity=low&limit=1000")["items"]
            .as_array()
            .map(Vec::len),
        Some(83)
    );
    assert_eq!(
        get_json(&srv, "/api/alerts?ip=10.0.0.1&limit=1000")["items"]
            .as_array()
            .map(Vec::len),
        Some(84)
    );
    // 10 seconds of the 250: [T0+10 s, T0+19 s].
    let since = (T0 / 1_000_000_000 + 10).to_string();
    let until = sensor::record::rfc3339_us(T0 + 19_000_000_000);
    let window = get_json(
        &srv,
        &format!("/api/alerts?since={since}&until={until}&limit=1000"),
    );
    assert_eq!(window["items"].as_array().map(Vec::len), Some(10));

    let stats = get_json(&srv, "/api/stats");
    assert_eq!(stats["totals"]["packets"], 3000);
    assert_eq!(stats["protocols"]["udp"], 900);
    assert_eq!(stats["alerts_by_kind"]["port_scan"], 84);
    assert_eq!(stats["series"].as_array().map(Vec::len), Some(30));
    let per_kind: i64 = stats["alert_series"]
        .as_array()
        .expect("alert series")
        .iter()
        .filter(|p| p["kind"] == "syn_flood")
        .map(|p| p["count"].as_i64().expect("count"))
        .sum();
    assert_eq!(per_kind, 83, "alerts over time add up per kind");
    let sus = get_json(&srv, "/api/suspicious-ips");
    assert_eq!(sus["items"][0]["ip"], "10.0.0.3", "critical first: {sus}");
    assert!(
        sus["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|s| s["ip"] != "10.0.0.4"),
        "spikes are not suspicion"
    );
    let status = get_json(&srv, "/api/status");
    assert!(
        status["live"] == false
            && status["capture"]
                .as_str()
                .is_some_and(|c| c.starts_with("read-only")),
        "sensor serve says it only reads: {status}"
    );
    for p in ["/api/flows", "/api/anomalies", "/api/top-talkers"] {
        assert_eq!(
            get_json(&srv, p)["items"].as_array().map(Vec::len),
            Some(0),
            "{p}"
        );
    }
    let (code, metrics) = http(srv.addr, "GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("sensor_packets_total 3000")
            && metrics.contains("sensor_alerts_total{kind=\"syn_flood\"} 83"),
        "{metrics}"
    );
    let (code, page) = http(srv.addr, "GET", "/", None, None);
    assert!(code == 200 && page.contains("<canvas id=\"ch-traffic\""));
}

#[test]
fn bad_parameters_are_400_with_a_json_error() {
    let srv = start("bad", fill_alerts);
    for path in [
        "/api/alerts?limit=0",
        "/api/alerts?limit=1001",
        "/api/alerts?limit=abc",
        "/api/alerts?cursor=-5",
        "/api/alerts?kind=DROP%20TABLE",
        "/api/alerts?severity=urgent",
        "/api/alerts?ip=10.0.0.300",
        "/api/alerts?since=yesterday",
        "/api/alerts?until=99999999999999",
        "/api/alerts?unknown=1",
        "/api/flows?kind=port_scan",
        "/api/flows?sort=random",
        "/api/flows?sort=score&cursor=12",
        "/api/flows?sort=score&cursor=x_1",
        "/api/flows?min_score=2",
        "/api/flows?min_score=nan",
        "/api/anomalies?kind=port_scan",
        "/api/stats?limit=-1",
        "/api/top-talkers?since=%27%3B",
    ] {
        let (code, body) = http(srv.addr, "GET", path, None, None);
        assert_eq!(code, 400, "{path}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
    let (code, body) = http(
        srv.addr,
        "GET",
        "/api/flows?sort=score&min_score=0.5&cursor=0.75_3",
        None,
        None,
    );
    assert_eq!(code, 200, "a well-formed score page: {body}");
    let (code, _) = http(srv.addr, "GET", "/api/nope", None, None);
    assert_eq!(code, 404);
    // A body that is not JSON, or not the expected JSON, is the API's JSON error too (axum's
    // own rejection answers in plain text).
    for body in [
        "{not json",
        "{\"prefix\": 5}",
        "{\"prefix\": \"10.0.0.1\", \"x\": 1}",
    ] {
        let (code, text) = http(
            srv.addr,
            "POST",
            "/api/blocklist",
            Some(&srv.token),
            Some(body),
        );
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{body}: {text}"));
        assert!(
            code == 400 && v["error"].as_str().is_some(),
            "{body}: {code} {text}"
        );
    }
}

/// The OpenAPI document is served and describes every route, the control routes with the
/// bearer scheme (schemathesis checks the responses against it in `cargo xtask test`).
#[test]
fn the_openapi_document_describes_every_route() {
    let srv = start("openapi", |_| {});
    let doc = get_json(&srv, "/api/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0", "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method, control) in [
        ("/api/status", "get", false),
        ("/api/stats", "get", false),
        ("/api/alerts", "get", false),
        ("/api/alerts/{id}", "get", false),
        ("/api/anomalies", "get", false),
        ("/api/flows", "get", false),
        ("/api/top-talkers", "get", false),
        ("/api/suspicious-ips", "get", false),
        ("/api/origins", "get", false),
        ("/api/events", "get", false),
        ("/metrics", "get", false),
        ("/api/alerts/{id}/pcap", "get", true),
        ("/api/interfaces", "get", true),
        ("/api/capture/start", "post", true),
        ("/api/capture/stop", "post", true),
        ("/api/replay", "post", true),
        ("/api/model/train", "post", true),
        ("/api/blocklist", "get", true),
        ("/api/blocklist", "post", true),
        ("/api/blocklist", "delete", true),
        ("/api/upstream", "get", true),
        ("/api/upstream", "delete", true),
        ("/api/rules", "get", true),
        ("/api/rules", "put", true),
        ("/api/rules/dry-run", "post", true),
        ("/api/rules/changes", "get", true),
    ] {
        let op = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented"))[method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert_eq!(
            op["security"][0].get("bearer").is_some(),
            control,
            "{method} {path}: bearer security"
        );
    }
    assert_eq!(paths.len(), 22, "a route was added: list it here");
    assert!(
        doc["components"]["schemas"]["AlertRecord"]["properties"]["summary"].is_object(),
        "the alert record's own schema is in the document"
    );
}

#[test]
fn control_endpoints_need_the_token_and_stay_in_the_data_directory() {
    let srv = start("control", |_| {});
    for (m, p) in [
        ("POST", "/api/replay"),
        ("POST", "/api/model/train"),
        ("POST", "/api/capture/start"),
        ("POST", "/api/capture/stop"),
        ("GET", "/api/interfaces"),
        ("GET", "/api/blocklist"),
        ("POST", "/api/blocklist"),
        ("DELETE", "/api/blocklist?target=203.0.113.7"),
    ] {
        let (code, _) = http(srv.addr, m, p, None, Some("{}"));
        assert_eq!(code, 401, "{p} without token");
        let (code, _) = http(srv.addr, m, p, Some("wrong-token-wrong-token"), Some("{}"));
        assert_eq!(code, 401, "{p} with a wrong token");
    }
    let t = Some(srv.token.as_str());
    let (code, body) = http(srv.addr, "GET", "/api/interfaces", t, None);
    let v: Value = serde_json::from_str(&body).expect("interfaces JSON");
    assert!(
        code == 200
            && v["live"] == false
            && v["items"].as_array().is_some_and(|i| i
                .iter()
                .any(|x| x["name"] == "lo" && x["attached"] == false)),
        "{body}"
    );
    // The blocklist lives in `sensor run`: a read-only server lists the (empty) audit log and
    // refuses changes with 409.
    let (code, body) = http(srv.addr, "GET", "/api/blocklist", t, None);
    let v: Value = serde_json::from_str(&body).expect("blocklist JSON");
    assert!(
        code == 200 && v["live"] == false && v["audit"].as_array().is_some_and(Vec::is_empty),
        "{body}"
    );
    let (code, body) = http(
        srv.addr,
        "POST",
        "/api/blocklist",
        t,
        Some("{\"prefix\": \"203.0.113.7\"}"),
    );
    assert_eq!(code, 409, "{body}");
    let (code, body) = http(
        srv.addr,
        "POST",
        "/api/blocklist",
        t,
        Some("{\"prefix\": 5}"),
    );
    assert_eq!(code, 400, "{body}");
    let outside =
        std::env::temp_dir().join(format!("sensor-api-outside-{}.pcap", std::process::id()));
    std::fs::write(&outside, b"x").expect("outside file");
    for path in [
        "../../../../etc/passwd",
        "/etc/passwd",
        outside.to_str().expect("utf8"),
        "sensor.db/../../x",
    ] {
        let (code, body) = http(
            srv.addr,
            "POST",
            "/api/replay",
            t,
            Some(&format!("{{\"path\": {path:?}}}")),
        );
        assert!(code == 403 || code == 404, "{path}: {code} {body}");
    }
    std::fs::remove_file(&outside).ok();
    let (code, _) = http(srv.addr, "POST", "/api/replay", t, Some("{\"path\": 5}"));
    assert_eq!(code, 400);
    let (code, _) = http(srv.addr, "POST", "/api/replay", t, Some("not json"));
    assert_eq!(code, 400);
    let (code, body) = http(
        srv.addr,
        "POST",
        "/api/capture/start",
        t,
        Some("{\"iface\": \"eth9\"}"),
    );
    assert!(
        code == 409 && body.contains("sensor run"),
        "serve is read-only: {code} {body}"
    );

    // A real replay through the API lands in the database the read endpoints serve.
    let Some(corpora) = sensor_tests::corpora() else {
        sensor_tests::skip("the replay part", "../shared/corpora is absent");
        return;
    };
    std::fs::copy(
        corpora.join("generated/nmap_sS_top1000.pcap"),
        srv.dir.join("scan.pcap"),
    )
    .expect("copy capture");
    let (code, body) = http(
        srv.addr,
        "POST",
        "/api/replay",
        t,
        Some("{\"path\": \"scan.pcap\"}"),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["alerts"]["port_scan"], 1, "{v}");
    let alerts = get_json(&srv, "/api/alerts?kind=port_scan");
    assert_eq!(alerts["items"][0]["src_ip"], "10.99.0.1");
    // The scan's probes past the alert's first 1,000 are summed into it, not stored one by one.
    let replayed = v["flows"].as_u64().expect("replayed flows");
    let summed = alerts["items"][0]["flows_summed"]["flows"]
        .as_u64()
        .unwrap_or_else(|| panic!("the scan's flows are summed: {alerts}"));
    assert!(
        summed > 0 && summed < replayed,
        "{summed} of {replayed} flows summed"
    );
    // Its packets went into the alert's pcap file: every packet of the capture to or from the
    // scanner (tshark's count on the original), from the rule's window to after the alert.
    assert_eq!(v["evidence_files"], 1, "{v}");
    let id = alerts["items"][0]["id"].as_i64().expect("id");
    let (code, ctype, body) =
        sensor_tests::get_bytes(srv.addr, &format!("/api/alerts/{id}/pcap"), &srv.token);
    assert_eq!(
        (code, ctype.as_str()),
        (200, "application/vnd.tcpdump.pcap")
    );
    let got = srv.dir.join("download.pcap");
    std::fs::write(&got, &body).expect("write the download");
    if let (Some(ours), Some(orig)) = (
        sensor_tests::tshark_fields(&got, &["ip.src", "ip.dst"]),
        sensor_tests::tshark_fields(&srv.dir.join("scan.pcap"), &["ip.src", "ip.dst"]),
    ) {
        let scanner = |l: &&String| l.split('\t').any(|a| a == "10.99.0.1");
        let ip = |l: &&String| !l.starts_with('\t');
        let want = orig.iter().filter(ip).filter(scanner).count();
        assert!(want > 1000, "the capture holds the scan");
        assert_eq!(
            ours.iter().filter(ip).count(),
            want,
            "IP packets in the alert's file"
        );
        assert!(ours.iter().filter(ip).all(|l| scanner(&l)));
    }
    // Train from the stored flows of that replay (a time range), then from the capture.
    let (code, body) = http(
        srv.addr,
        "POST",
        "/api/model/train",
        t,
        Some("{\"since\": \"0\", \"until\": \"3999999999\"}"),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    // Every stored flow of the replay and nothing else: the ones not summed into the alert.
    assert_eq!(v["flows"].as_u64(), Some(replayed - summed), "{v}");
    assert!(srv.dir.join("model.json").is_file());
    let status = get_json(&srv, "/api/status");
    assert_eq!(status["model"]["flows"], v["flows"], "{status}");
    let (code, _) = http(
        srv.addr,
        "POST",
        "/api/model/train",
        t,
        Some("{\"path\": \"scan.pcap\"}"),
    );
    assert_eq!(code, 200);
    let (code, _) = http(
        srv.addr,
        "POST",
        "/api/model/train",
        t,
        Some("{\"since\": \"10\"}"),
    );
    assert_eq!(code, 400, "a range needs both ends");
    std::fs::write(srv.dir.join("junk.pcap"), b"not a capture").expect("junk");
    let (code, body) = http(
        srv.addr,
        "POST",
        "/api/replay",
        t,
        Some("{\"path\": \"junk.pcap\"}"),
    );
    assert_eq!(code, 400, "a bad capture is the client's error: {body}");
}

#[test]
fn server_sent_events_push_new_alerts() {
    let srv = start("sse", |_| {});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let resp = agent
        .get(format!("http://{}/api/events", srv.addr))
        .header("Accept", "text/event-stream")
        .call()
        .expect("event stream");
    assert_eq!(resp.status().as_u16(), 200);
    // The server reads the database every second; add an alert once the stream is open.
    let mut reader = BufReader::new(resp.into_body().into_reader());
    let mut line = String::new();
    {
        let store = Store::open(&srv.dir.join("sensor.db"), Retention::default()).expect("store");
        let (a, ts) = alert(1, AlertKind::Ddos, Severity::Critical, "10.9.9.9");
        store.alert(a, ts).expect("alert");
        store.sync().expect("sync");
    }
    let mut got = String::new();
    while !got.contains("10.9.9.9") {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .expect("an alert event before the read timeout");
        assert!(n > 0, "stream closed before the alert arrived");
        got.push_str(&line);
    }
    assert!(
        got.contains("event: alert") && got.contains("\"kind\":\"ddos\""),
        "{got}"
    );
}

/// `/api/replay` runs with the server's config: port-scan thresholds (the 60 s window and the
/// slow 15-minute one) above the 1,000 ports nmap probes turn the scan alert off, the default
/// finds it.
#[test]
fn the_loaded_config_decides_what_api_replay_finds() {
    let Some(corpora) = sensor_tests::corpora() else {
        sensor_tests::skip("config replay test", "../shared/corpora is absent");
        return;
    };
    let mut strict = sensor::config::Config::default();
    strict.rules.port_scan_ports = 5000;
    strict.rules.slow_scan_ports = 5000;
    for (name, config, expected) in [
        ("cfg-default", sensor::config::Config::default(), Some(1)),
        ("cfg-strict", strict, None),
    ] {
        let srv = start_with(name, config, |_| {});
        std::fs::copy(
            corpora.join("generated/nmap_sS_top1000.pcap"),
            srv.dir.join("scan.pcap"),
        )
        .expect("copy capture");
        let (code, body) = http(
            srv.addr,
            "POST",
            "/api/replay",
            Some(&srv.token),
            Some("{\"path\": \"scan.pcap\"}"),
        );
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["alerts"]["port_scan"].as_u64(), expected, "{name}: {v}");
    }
}

/// `GET /api/alerts/{id}/pcap`: the token, a numeric id, and only a regular file of the one
/// name form in DATA_DIR/evidence; whatever an alert row names, nothing else is served.
#[test]
fn alert_pcap_serves_only_evidence_files_and_needs_the_token() {
    let names = [
        Some("alert-1-1.pcap"),
        None,
        Some("../sensor.db"),
        Some("alert-1-4.pcap"),
        Some("alert-1-5.pcap"),
    ];
    let srv = start("pcap", |store| {
        for (i, n) in names.iter().enumerate() {
            let (mut a, ts) = alert(
                i as u64 + 1,
                AlertKind::PortScan,
                Severity::High,
                "10.0.0.1",
            );
            a.pcap = n.map(str::to_owned);
            store.alert(a, ts).expect("alert");
        }
    });
    let ev = srv.dir.join("evidence");
    std::fs::create_dir_all(&ev).expect("evidence dir");
    let mut w = sensor::evidence::pcap::PcapWriter::create(&ev.join("alert-1-1.pcap"), 1, 256)
        .expect("pcap");
    w.write(1_700_000_000_000_000_001, 60, &[0u8; 60])
        .expect("write");
    w.finish().expect("finish");
    // Row 5 names a link planted in the directory, pointing at the database.
    std::os::unix::fs::symlink(srv.dir.join("sensor.db"), ev.join("alert-1-5.pcap"))
        .expect("symlink");
    let get = |path: &str| sensor_tests::get_bytes(srv.addr, path, &srv.token);

    let (code, ctype, body) = get("/api/alerts/1/pcap");
    assert_eq!(
        (code, ctype.as_str()),
        (200, "application/vnd.tcpdump.pcap")
    );
    assert_eq!(
        body,
        std::fs::read(ev.join("alert-1-1.pcap")).expect("file")
    );
    assert_eq!(
        http(srv.addr, "GET", "/api/alerts/1/pcap", None, None).0,
        401
    );
    assert_eq!(
        http(
            srv.addr,
            "GET",
            "/api/alerts/1/pcap",
            Some("wrong-token-0123456789"),
            None
        )
        .0,
        401
    );
    for (path, want, says) in [
        ("/api/alerts/2/pcap", 404, "no packet evidence"),
        ("/api/alerts/3/pcap", 404, "gone"),
        ("/api/alerts/4/pcap", 404, "gone"),
        ("/api/alerts/5/pcap", 404, "gone"),
        ("/api/alerts/99/pcap", 404, "no alert 99"),
        ("/api/alerts/abc/pcap", 400, "positive integer"),
        ("/api/alerts/-1/pcap", 400, "positive integer"),
        ("/api/alerts/1%2F..%2F2/pcap", 400, "positive integer"),
    ] {
        let (code, ctype, body) = get(path);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(code, want, "{path}: {text}");
        assert!(
            ctype.starts_with("application/json") && text.contains(says),
            "{path}: {text}"
        );
        assert!(
            !text.contains("SQLite") && !text.contains(&*srv.dir.to_string_lossy()),
            "{path} leaks: {text}"
        );
    }
}

/// Every response carries the dashboard's security headers (a CSP with nothing inline, no
/// framing, no sniffing, no referrer), and no CORS header, whatever the Origin.
#[test]
fn responses_carry_security_headers_and_no_cors() {
    let srv = start("headers", fill_alerts);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for path in [
        "/",
        "/app.js",
        "/api/status",
        "/api/alerts?limit=x",
        "/api/alerts/1/pcap",
    ] {
        let resp = agent
            .get(format!("http://{}{path}", srv.addr))
            .header("Origin", "https://evil.example")
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let csp = h("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp:?}"
        );
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(h("access-control-allow-origin"), "", "{path}: no CORS");
    }
}

/// Slow and idle clients: a connection that does not finish its request headers within the
/// header timeout is closed, and beyond the connection cap a new connection is closed at
/// once, counted on /metrics; once the idle ones are gone the server answers again.
#[test]
fn slow_clients_are_cut_off_and_connections_are_capped() {
    use std::io::{Read as _, Write as _};
    let dir = std::env::temp_dir().join(format!("sensor-api-{}-slow", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("sensor.db");
    Store::open(&db, Retention::default())
        .expect("store")
        .sync()
        .expect("sync");
    let mut state = ApiState::read_only(db, dir.clone(), "t0ken-for-tests-0123456789".into());
    state.http = sensor::api::HttpLimits {
        header_timeout: Duration::from_millis(500),
        max_connections: 4,
    };
    let srv = sensor_tests::TestServer::start(Arc::new(state));
    let closed_within = |s: &mut std::net::TcpStream, secs: u64| -> bool {
        s.set_read_timeout(Some(Duration::from_secs(secs)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        // Closed: EOF (0) or a reset; a timeout means it is still open.
        !matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    };
    // Slowloris: half a request, then silence.
    let mut slow = std::net::TcpStream::connect(srv.addr).expect("connect");
    slow.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    assert!(
        closed_within(&mut slow, 10),
        "a half-sent request held the connection"
    );
    // Four idle connections fill the cap; a fifth is closed at once.
    let mut idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(srv.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = std::net::TcpStream::connect(srv.addr).expect("connect");
    extra
        .write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok();
    let mut buf = Vec::new();
    extra
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let _ignored = extra.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "served beyond the cap"
    );
    // The idle ones time out like the slow one; then the server answers again.
    for s in &mut idle {
        assert!(closed_within(s, 10), "an idle connection stayed open");
    }
    let (code, metrics) = http(srv.addr, "GET", "/metrics", None, None);
    assert_eq!(code, 200);
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sensor_api_connections_refused_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("refused counter");
    assert!(refused >= 1, "{metrics}");
    std::fs::remove_dir_all(&dir).ok();
}

/// One raw request on a fresh connection; the status code of the answer (0: none).
fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Huge limits and numbers, bad UTF-8 in the query (escaped and raw) and in JSON bodies: a
/// clear 4xx, and the server still answers the next request.
#[test]
fn huge_numbers_and_bad_utf8_are_400() {
    let srv = start("utf8", fill_alerts);
    for path in [
        "/api/alerts?limit=18446744073709551616",
        "/api/alerts?limit=99999999",
        "/api/alerts?limit=1e9",
        "/api/alerts?cursor=99999999999999999999999",
        "/api/flows?min_score=1e999",
        "/api/alerts?kind=%FF%FE",
        "/api/alerts?ip=%C0%AF",
    ] {
        let (code, body) = http(srv.addr, "GET", path, None, None);
        assert_eq!(code, 400, "{path}: {body}");
    }
    let raw: [&[u8]; 2] = [
        b"GET /api/alerts?kind=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        // Header values may carry such bytes (obs-text); a token made of them is just wrong.
        b"GET /api/interfaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    ];
    for r in raw {
        let code = raw_status(srv.addr, r);
        assert!(
            (400..500).contains(&code),
            "{:?}: {code}",
            String::from_utf8_lossy(r)
        );
    }
    let body = b"{\"path\": \"\xff\xfe.pcap\"}";
    let req = [
        format!(
            "POST /api/replay HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            srv.token,
            body.len()
        )
        .as_bytes(),
        body,
    ]
    .concat();
    assert_eq!(raw_status(srv.addr, &req), 400, "bad UTF-8 in a JSON body");
    let (code, _) = http(srv.addr, "GET", "/api/alerts?limit=1", None, None);
    assert_eq!(code, 200, "still serving");
}

/// Eight replays asked for at the same moment: one runs, the others are told 409 at once
/// (each would hold a flow table and a thread); the slot is free again afterwards.
#[test]
fn concurrent_replays_run_one_at_a_time() {
    let Some(corpora) = sensor_tests::corpora() else {
        sensor_tests::skip("concurrent replays", "../shared/corpora is absent");
        return;
    };
    let srv = start("jobs", |_| {});
    std::fs::copy(
        corpora.join("generated/hping3_synflood_20k.pcap"),
        srv.dir.join("flood.pcap"),
    )
    .expect("copy capture");
    let go = std::sync::Barrier::new(8);
    let codes: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    go.wait();
                    http(
                        srv.addr,
                        "POST",
                        "/api/replay",
                        Some(&srv.token),
                        Some("{\"path\": \"flood.pcap\"}"),
                    )
                    .0
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("client")).collect()
    });
    let ok = codes.iter().filter(|c| **c == 200).count();
    let busy = codes.iter().filter(|c| **c == 409).count();
    assert_eq!(ok + busy, 8, "only 200 or 409: {codes:?}");
    assert!(
        ok >= 1 && busy >= 1,
        "one ran, the others were refused: {codes:?}"
    );
    let db = sensor::sink::store::open_ro(&srv.dir.join("sensor.db")).expect("db");
    let sessions: i64 = db
        .query_row("SELECT count(*) FROM capture_sessions", [], |r| r.get(0))
        .expect("sessions");
    assert_eq!(sessions as usize, ok, "a session per replay that ran");
    let (code, body) = http(
        srv.addr,
        "POST",
        "/api/replay",
        Some(&srv.token),
        Some("{\"path\": \"flood.pcap\"}"),
    );
    assert_eq!(code, 200, "the slot is free again: {body}");
}

/// Alerts carry where their remote side is (`[geo]`): the list filters by country and AS,
/// `/api/origins` counts alerts per country and AS (merged ones not twice), and bad values are
/// refused with what is expected. Suspicious IPs carry their origin when the data is installed.
#[test]
fn alerts_filter_and_group_by_their_remote_sides_country_and_as() {
    let origin = |ip: &str, cc: &str, asn: u32, org: &str| sensor::geo::Origin {
        ip: ip.parse().expect("ip"),
        country: Some(cc.into()),
        asn: Some(asn),
        as_org: Some(org.into()),
    };
    let srv = start("origins", |store| {
        for i in 0..9u64 {
            let src = format!("198.51.100.{}", i % 3);
            let (mut a, ts) = alert(i, AlertKind::PortScan, Severity::High, &src);
            a.remote = Some(match i % 3 {
                0 => origin(&src, "NL", 64500, "Example Hosting B.V."),
                1 => origin(&src, "NL", 64501, "Other Net"),
                _ => origin(&src, "DE", 64502, "Third GmbH"),
            });
            if i == 8 {
                a.state = sensor::record::AlertState::Merged;
            }
            store.alert(a, ts).expect("alert");
        }
        let (a, ts) = alert(20, AlertKind::SynFlood, Severity::Low, "10.0.0.9");
        store.alert(a, ts).expect("alert without origin");
    });
    let ids =
        |path: &str| -> usize { get_json(&srv, path)["items"].as_array().map_or(0, Vec::len) };
    assert_eq!(ids("/api/alerts?country=NL"), 6);
    assert_eq!(ids("/api/alerts?country=DE"), 3);
    assert_eq!(ids("/api/alerts?asn=64501"), 3);
    assert_eq!(ids("/api/alerts?asn=64500&country=NL"), 3);
    assert_eq!(ids("/api/alerts?asn=64500&country=DE"), 0);
    let o = get_json(&srv, "/api/origins");
    assert_eq!(o["countries"][0]["key"], "NL", "{o}");
    assert_eq!(
        (
            o["countries"][0]["alerts"].as_i64(),
            o["countries"][0]["sources"].as_i64()
        ),
        (Some(6), Some(2)),
        "{o}"
    );
    assert_eq!(
        o["countries"][1]["alerts"], 2,
        "the merged alert is not counted twice: {o}"
    );
    let asn = o["asns"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["key"] == "64500"))
        .cloned()
        .expect("AS64500 listed");
    assert_eq!(asn["name"], "Example Hosting B.V.", "{o}");
    assert_eq!(o["unknown"], 1, "{o}");
    for bad in [
        "/api/alerts?country=nl",
        "/api/alerts?country=NLD",
        "/api/alerts?asn=x",
        "/api/flows?country=NL",
    ] {
        let (code, body) = http(srv.addr, "GET", bad, None, None);
        assert_eq!(code, 400, "{bad}: {body}");
    }
    // With the databases installed, suspicious IPs carry their origin (8.8.8.8: AS15169).
    if std::path::Path::new(sensor::geo::DEFAULT_DIR)
        .join("geo-whois-asn-country.mmdb")
        .exists()
    {
        let srv = start("origins-live", |store| {
            let (a, ts) = alert(1, AlertKind::PortScan, Severity::High, "8.8.8.8");
            store.alert(a, ts).expect("alert");
        });
        let s = get_json(&srv, "/api/suspicious-ips");
        assert_eq!(s["items"][0]["origin"]["asn"], 15169, "{s}");
        assert_eq!(s["items"][0]["origin"]["country"], "US", "{s}");
    }
}

/// The rules endpoints on a read-only server: the rules in force and their TOML, a dry run on
/// a capture in the data directory (the scan's alert would go with a higher bar, an operator
/// rule's would come), a range dry run without a history (409), refused rules named by line,
/// and no apply (409): `sensor serve` only reads.
#[test]
fn rules_dry_run_on_a_capture_and_read_only_refusals() {
    let srv = start("rules", |_| {});
    let t = Some(srv.token.as_str());
    let (code, body) = http(srv.addr, "GET", "/api/rules", None, None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = http(srv.addr, "GET", "/api/rules", t, None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["rules"]["port_scan_ports"], 20, "{v}");
    assert_eq!(v["live"], false);
    assert_eq!(v["toml"], "[rules]\n", "defaults write nothing: {v}");
    let change = "[[rules.custom]]\nname = \"wide_ports\"\ncount = \"distinct_dst_ports\"\n\
                  window_s = 60\nthreshold = 300\n\n[rules]\nport_scan_ports = 5000\n\
                  slow_scan_ports = 5000\n";
    let body = json!({ "toml": change }).to_string();
    let (code, resp) = http(srv.addr, "POST", "/api/rules/dry-run", t, Some(&body));
    assert_eq!(code, 409, "no history on this server: {resp}");
    let bad = json!({ "toml": "[rules]\nport_scan_ports = 0.5\n" }).to_string();
    let (code, resp) = http(srv.addr, "POST", "/api/rules/dry-run", t, Some(&bad));
    assert_eq!(code, 400, "{resp}");
    assert!(resp.contains("line 2"), "{resp}");
    let apply = json!({ "toml": change, "actor": "someone" }).to_string();
    let (code, resp) = http(srv.addr, "PUT", "/api/rules", t, Some(&apply));
    assert_eq!(code, 409, "{resp}");
    let (code, resp) = http(srv.addr, "GET", "/api/rules/changes", t, None);
    assert_eq!(code, 200, "{resp}");
    let Some(corpora) = sensor_tests::corpora() else {
        sensor_tests::skip("rules dry run on a capture", "../shared/corpora is absent");
        return;
    };
    std::fs::copy(
        corpora.join("generated/nmap_sS_top1000.pcap"),
        srv.dir.join("scan.pcap"),
    )
    .expect("copy capture");
    let body = json!({ "toml": change, "path": "scan.pcap" }).to_string();
    let (code, resp) = http(srv.addr, "POST", "/api/rules/dry-run", t, Some(&body));
    assert_eq!(code, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).expect("json");
    let kinds = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["kind"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        kinds("would_not_raise").contains(&"port_scan".to_owned()),
        "{v}"
    );
    assert!(
        kinds("would_raise").contains(&"wide_ports".to_owned()),
        "{v}"
    );
    assert!(v["history"]["events"].as_u64().unwrap_or(0) > 1000, "{v}");
    // Its history was recorded beside the database and is gone.
    let left: Vec<_> = std::fs::read_dir(&srv.dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".dry-run"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let outside = json!({ "toml": change, "path": "/etc/passwd" }).to_string();
    let (code, _) = http(srv.addr, "POST", "/api/rules/dry-run", t, Some(&outside));
    assert_eq!(code, 403);
}
