//! The dashboard in a real browser: headless Chromium loads the page from a server over a
//! database filled by replaying real captures, runs its JavaScript, and the rendered DOM must
//! show the numbers, the charts and the alerts; a screenshot goes to target/dashboard.png.

use std::{path::PathBuf, process::Command, sync::Arc};

use sensor::{
    api::ApiState,
    config::Config,
    drive::replay::{ReplayOptions, replay},
    sink::store::{Retention, Store, StoreSink},
};

const MARKUP: &str = "<img src=x onerror=alert(1)><b id=injected>bold</b>";

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn dashboard_renders_cards_charts_and_alerts() {
    let Some(corpora) = sensor_tests::corpora() else {
        sensor_tests::skip("dashboard test", "../shared/corpora is absent");
        return;
    };
    let Some(browser) = chromium() else {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "chromium is missing (cargo xtask setup installs it)"
        );
        sensor_tests::skip("dashboard test", "no chromium");
        return;
    };
    let dir = std::env::temp_dir().join(format!("sensor-dash-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("sensor.db");
    let files = [
        corpora.join("generated/nmap_sS_top1000.pcap"),
        corpora.join("generated/hping3_udpflood_20k.pcap"),
    ];
    let summary = {
        let store = Store::open(&db, Retention::default()).expect("store");
        let sink = StoreSink::new(&store, "replay", "dashboard test", true).expect("session");
        let s = replay(
            &files,
            ReplayOptions::new(&Config::default()),
            vec![Box::new(sink)],
        )
        .expect("replay");
        // An alert whose evidence carries markup (what a hostile packet could put in a
        // field): the page must show it as text.
        store
            .alert(
                sensor::record::AlertRecord {
                    id: 999,
                    state: sensor::record::AlertState::Closed,
                    merged_into: None,
                    kind: sensor::record::AlertKind::PortScan,
                    severity: sensor::record::Severity::Low,
                    detector: sensor::record::DetectorKind::Rule,
                    src_ip: None,
                    dst_ip: None,
                    first_seen: "2026-11-27T12:00:00.000000Z".into(),
                    last_seen: "2026-11-27T12:00:00.000000Z".into(),
                    count: 1,
                    score: None,
                    summary: MARKUP.into(),
                    evidence: serde_json::json!({ "note": MARKUP }),
                    rate_history: Vec::new(),
                    pcap: None,
                    direction: None,
                    hostgroup: None,
                    remote: None,
                },
                1_795_000_000_000_000_000,
            )
            .expect("hostile alert");
        store.sync().expect("sync");
        s
    };
    let state = Arc::new(ApiState::read_only(
        db,
        dir.clone(),
        "dashboard-test-token-0123".into(),
    ));
    let server = sensor_tests::TestServer::start(state);
    // Static mode: without the event stream the page goes idle once drawn, which is what
    // headless Chromium waits for before it dumps or shoots.
    let url = format!("http://{}/?live=0", server.addr);
    let profile = dir.join("profile");
    let run_at = |url: &str, extra: &[&str]| {
        let out = Command::new(&browser)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,2000",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let run = |extra: &[&str]| run_at(&url, extra);
    let dom = run(&["--dump-dom"]);
    // The detail view of the scan's alert, opened by its address as a click opens it.
    let scan_id: i64 = sensor::sink::store::open_ro(&dir.join("sensor.db"))
        .expect("db")
        .query_row(
            "SELECT id FROM alerts WHERE kind = 'port_scan' AND src_ip IS NOT NULL ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("a stored scan alert");
    let detail_dom = run_at(&format!("{url}#alert-{scan_id}"), &["--dump-dom"]);
    let detail_shot =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-detail.png");
    run_at(
        &format!("{url}#alert-{scan_id}"),
        &[&format!("--screenshot={}", detail_shot.display())],
    );
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    run(&[&format!("--screenshot={}", shot.display())]);
    drop(server);
    let _ignored = std::fs::remove_dir_all(&dir);

    // Cards: the packet card shows the replayed total (digits only: separators follow the locale).
    let card = |id: &str| -> String {
        let start = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id} in the page"));
        let rest = &dom[start..];
        let text =
            &rest[rest.find('>').expect("tag end") + 1..rest.find("</div>").expect("div end")];
        text.chars().filter(char::is_ascii_digit).collect()
    };
    assert_eq!(
        card("c-packets"),
        summary.read.packets.to_string(),
        "packet card"
    );
    assert_eq!(card("c-flows"), summary.flows.to_string(), "flow card");
    assert_eq!(
        card("c-alerts"),
        (summary.alerts.values().sum::<u64>() + 1).to_string(),
        "alert card (the replay's and the hostile one)"
    );
    // The markup is text in the alert table: escaped in the DOM, no element made of it.
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;&lt;b id=injected&gt;bold&lt;/b&gt;"),
        "the evidence's markup is not shown as text"
    );
    assert!(
        !dom.contains("<img src=\"x\"") && !dom.contains("id=\"injected\""),
        "markup from an alert became elements"
    );
    // Charts: Chart.js sized the canvases when it drew them.
    for id in ["ch-traffic", "ch-proto", "ch-kinds"] {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no canvas {id}"));
        let tag = &dom
            [dom[..at].rfind('<').expect("tag start")..at + dom[at..].find('>').expect("tag end")];
        assert!(tag.contains("box-sizing"), "{id} was not drawn: {tag}");
    }
    // The alert table shows the scan and the flood with attacker, victim and severity badge.
    let table = &dom[dom.find("id=\"t-alerts\"").expect("alert table")..];
    let table = &table[..table.find("</table>").expect("table end")];
    for needle in [
        "port_scan",
        "udp_flood",
        "10.99.0.1",
        "10.99.0.2",
        "badge sev-",
    ] {
        assert!(
            table.contains(needle),
            "alert table lacks {needle}: {table}"
        );
    }
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot missing or empty"
    );
    // The table says what happened in words, not JSON.
    assert!(
        table.contains("TCP scan of ") && table.contains(" ports of 10.99.0.2 from 10.99.0.1"),
        "no sentence for the scan: {table}"
    );

    // Detail view: shown, with the sentence, the evidence's fields, the scan's flows, and its
    // timeline drawn on a time axis.
    let at = detail_dom.find("id=\"detail\"").expect("detail section");
    let section = &detail_dom[at..];
    let section = &section[..section.find("</section>").expect("section end")];
    let open_tag = &detail_dom[detail_dom[..at].rfind('<').expect("tag")..at + 20];
    assert!(
        !open_tag.contains("hidden"),
        "detail view not opened: {open_tag}"
    );
    for needle in [
        &format!("#{scan_id} port_scan"),
        "TCP scan of",
        "sample_ports",
        "10.99.0.1:",
        "Its flows",
    ] {
        assert!(
            section.contains(needle),
            "detail view lacks {needle}: {section}"
        );
    }
    let flows = &section[section.find("id=\"t-detail-flows\"").expect("flows table")..];
    let rows = flows[..flows.find("</table>").expect("end")]
        .matches("<tr>")
        .count();
    assert!(rows > 10, "{rows} flow rows in the detail view");
    let at = section.find("id=\"ch-detail\"").expect("detail chart");
    let tag = &section[section[..at].rfind('<').expect("tag start")
        ..at + section[at..].find('>').expect("tag end")];
    assert!(tag.contains("box-sizing"), "detail chart not drawn: {tag}");
    assert!(
        std::fs::metadata(&detail_shot).is_ok_and(|m| m.len() > 10_000),
        "detail screenshot missing or empty"
    );
}
