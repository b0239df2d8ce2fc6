use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sensor-store-{}-{name}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&d);
    d.join("sensor.db")
}

#[test]
fn creates_private_wal_database_and_migrates_once() {
    let p = tmp("create");
    drop(open_rw(&p).expect("create"));
    let mode = std::fs::metadata(&p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let c = open_rw(&p).expect("reopen");
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    let wal: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!((v, wal.as_str()), (SCHEMA_VERSION, "wal"));
    c.pragma_update(None, "user_version", 99).expect("bump");
    drop(c);
    assert!(matches!(
        open_rw(&p),
        Err(StoreError::Newer { found: 99, .. })
    ));
    std::fs::remove_dir_all(p.parent().expect("dir")).ok();
}

/// Two databases in one data directory (two `sensor replay --db X` there) name their
/// alerts' evidence files apart, and each keeps its name across opens.
#[test]
fn databases_sharing_a_directory_name_evidence_apart() {
    let a = tmp("prefix");
    let b = a.with_file_name("other.db");
    let sa = Store::open(&a, Retention::default()).expect("a");
    let sb = Store::open(&b, Retention::default()).expect("b");
    let (pa, pb) = (sa.evidence_prefix(), sb.evidence_prefix());
    assert_ne!(pa, pb);
    let file = crate::evidence::file_name(&pa, 1);
    assert!(crate::evidence::is_file_name(&file), "{file}");
    drop(sa);
    let again = Store::open(&a, Retention::default()).expect("a again");
    assert_eq!(again.evidence_prefix(), pa);
    drop((again, sb));
    std::fs::remove_dir_all(a.parent().expect("dir")).ok();
}

/// Scored flows are listed highest score first, paged by (score, id); unscored ones only
/// in time order; `min_score` filters.
#[test]
fn flows_rank_by_score_with_cursor_pages() {
    use crate::sink::store::read::{Filter, Table, list};
    let p = tmp("score");
    {
        let s = Store::open(&p, Retention::default()).expect("open");
        let mut t = crate::flow::FlowTable::new(crate::flow::FlowConfig::default());
        let k = sensor_common::FlowKey {
            src_addr: std::net::Ipv4Addr::new(10, 0, 0, 1)
                .to_ipv6_mapped()
                .octets(),
            dst_addr: std::net::Ipv4Addr::new(10, 0, 0, 2)
                .to_ipv6_mapped()
                .octets(),
            src_port: 1000,
            dst_port: 80,
            proto: sensor_common::proto::UDP,
            family: sensor_common::family::IPV4,
            _pad: [0; 2],
        };
        let pk = crate::packet::Parsed {
            key: k,
            tcp_flags: 0,
            echo: false,
            fragment: false,
        };
        let mut flow = None;
        t.packet(&pk, 60, 1_000, &mut |_| {});
        t.flush(&mut |f| flow = Some(f));
        let base = FlowRecord::from(&flow.expect("one flow"));
        // Scores 0.10 .. 0.90 on ids 1..9 (0.5 twice), then one unscored.
        for (i, sc) in [0.1, 0.9, 0.5, 0.3, 0.5, 0.7, 0.2, 0.8, 0.6]
            .iter()
            .enumerate()
        {
            let r = FlowRecord {
                score: Some(*sc),
                anomalous: Some(*sc >= 0.6),
                ..base.clone()
            };
            s.flow(r, 1_000 + i as u64, true).expect("flow");
        }
        s.flow(base.clone(), 2_000, true).expect("unscored");
        s.sync().expect("sync");
    }
    let c = open_rw(&p).expect("reopen");
    let page = |cursor: Option<i64>, cursor_score: Option<f64>| {
        list(
            &c,
            Table::Flows,
            &Filter {
                limit: 4,
                by_score: true,
                cursor,
                cursor_score,
                ..Filter::default()
            },
        )
        .expect("list")
    };
    let scores = |v: &serde_json::Value| -> Vec<f64> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["score"].as_f64().expect("score"))
            .collect()
    };
    let first = page(None, None);
    assert_eq!(scores(&first), [0.9, 0.8, 0.7, 0.6]);
    let cur = first["next_cursor"].as_str().expect("score cursor");
    let (s, id) = cur.split_once('_').expect("score_id");
    let second = page(id.parse().ok(), s.parse().ok());
    assert_eq!(scores(&second), [0.5, 0.5, 0.3, 0.2]);
    let all = list(
        &c,
        Table::Flows,
        &Filter {
            limit: 100,
            ..Filter::default()
        },
    )
    .expect("list");
    assert_eq!(
        all["items"].as_array().map(Vec::len),
        Some(10),
        "time order lists every flow"
    );
    let high = list(
        &c,
        Table::Flows,
        &Filter {
            limit: 100,
            min_score: Some(0.75),
            ..Filter::default()
        },
    )
    .expect("list");
    assert_eq!(scores(&high).len(), 2);
    std::fs::remove_dir_all(p.parent().expect("dir")).ok();
}

#[test]
fn reopening_an_existing_database_keeps_its_rows() {
    let p = tmp("reopen");
    {
        let s = Store::open(&p, Retention::default()).expect("open");
        s.stats_row(
            StatsRow {
                ts: 1,
                seconds: 1,
                packets: 5,
                ..StatsRow::default()
            },
            true,
        )
        .expect("row");
        s.sync().expect("sync");
    }
    // A database at version 0 (e.g. an empty file someone created) is migrated too.
    let empty = p.with_file_name("empty.db");
    std::fs::write(&empty, b"").expect("empty file");
    let c = open_rw(&empty).expect("migrate empty");
    let tables: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .expect("tables");
    // flows, alerts, anomalies, statistics, capture_sessions, model_versions, mitigations,
    // attack_flows, rule_changes.
    assert_eq!(tables, 9);
    let c = open_rw(&p).expect("reopen");
    let n: i64 = c
        .query_row("SELECT sum(packets) FROM statistics", [], |r| r.get(0))
        .expect("sum");
    assert_eq!(n, 5);
    std::fs::remove_dir_all(p.parent().expect("dir")).ok();
}

#[test]
fn a_version_1_database_with_data_is_migrated_to_the_current_schema() {
    let p = tmp("v1");
    std::fs::create_dir_all(p.parent().expect("dir")).expect("dir");
    {
        let c = Connection::open(&p).expect("create v1");
        c.execute_batch(MIGRATIONS[0]).expect("v1 schema");
        c.pragma_update(None, "user_version", 1).expect("version");
        c.execute(
            "INSERT INTO alerts (kind, severity, detector, first_seen, last_seen, count, record) VALUES ('port_scan', 'high', 'rule', 1, 2, 3, '{}')",
            [],
        )
        .expect("old alert");
    }
    let c = open_rw(&p).expect("migrate");
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    let (n, key): (i64, Option<String>) = c
        .query_row("SELECT count(*), max(alert_key) FROM alerts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("rows");
    assert_eq!(
        (v, n, key),
        (SCHEMA_VERSION, 1, None),
        "old rows kept, new column added"
    );
    std::fs::remove_dir_all(p.parent().expect("dir")).ok();
}

/// A database locked by another connection: rows wait in memory, the oldest statistics
/// rows beyond the cap are dropped and counted; what is held lands once the lock goes.
#[test]
fn a_locked_database_holds_rows_sheds_the_oldest_and_recovers() {
    let p = tmp("locked");
    drop(open_rw(&p).expect("create"));
    let holder = Connection::open(&p).expect("other connection");
    holder.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let s = Store::start_with_cap(&p, Retention::default(), Some(open_rw(&p).expect("rw")), 10)
        .expect("store");
    let row = |i: u64| StatsRow {
        ts: i,
        seconds: 1,
        packets: i,
        ..StatsRow::default()
    };
    for i in 0..25 {
        s.stats_row(row(i), true).expect("queued");
    }
    let err = s.sync().expect_err("nothing commits while locked");
    assert!(
        matches!(&err, StoreError::Unavailable { reason, .. } if reason.contains("locked")),
        "{err}"
    );
    assert!(s.stats().failure().is_some());
    // The cap is applied at every retry: of the 30 rows, the oldest 20 are dropped.
    std::thread::sleep(Duration::from_millis(1500));
    for i in 25..30 {
        s.stats_row(row(i), true).expect("queued");
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.stats().dropped.load(Ordering::Relaxed), 20);
    holder.execute_batch("COMMIT").expect("unlock");
    let mut ok = false;
    for _ in 0..100 {
        if s.sync().is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "writes resume once the lock is released");
    assert!(s.stats().failure().is_none());
    let (n, min): (i64, i64) = holder
        .query_row("SELECT count(*), min(ts) FROM statistics", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("rows");
    // The newest 10 kept, in order.
    assert_eq!((n, min), (10, 20));
    drop(s);
    std::fs::remove_dir_all(p.parent().expect("dir")).ok();
}

#[test]
fn retention_deletes_by_age_and_by_count() {
    let p = tmp("retention");
    let c = open_rw(&p).expect("open");
    let day = 86_400 * 1_000_000_000i64;
    for i in 0..10i64 {
        c.execute(
            "INSERT INTO statistics (ts, seconds, packets, bytes, tcp, udp, icmp, other, flows) VALUES (?1, 1, 0, 0, 0, 0, 0, 0, 0)",
            [100 * day + i * day],
        )
        .expect("insert");
    }
    let now = (110 * day) as u64;
    // Age: 7 days keeps ts >= day 103 (7 rows); count: at most 5 rows.
    apply_retention(
        &c,
        Retention {
            max_age_days: 7,
            max_rows: 5,
        },
        now,
    )
    .expect("retention");
    let (n, min): (i64, i64) = c
        .query_row("SELECT count(*), min(ts) FROM statistics", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("q");
    assert_eq!((n, min / day), (5, 105));
    std::fs::remove_dir_all(p.parent().expect("dir")).ok();
}

/// An alert queued behind a backlog of rows (a flood's flows) is committed ahead of it: it is
/// readable while most of the backlog is still unwritten.
#[test]
fn an_alert_does_not_wait_behind_a_backlog_of_rows() {
    use crate::detect::{
        Severity,
        alert::{AlertKind, DetectorKind},
    };
    let p = tmp("priority");
    let s = Store::open(&p, Retention::default()).expect("open");
    let batches = 400u64;
    for b in 0..batches {
        let rows = (0..256)
            .map(|i| {
                Msg::Stats(StatsRow {
                    ts: b * 256 + i,
                    seconds: 1,
                    ..StatsRow::default()
                })
            })
            .collect();
        s.send(Msg::Batch(rows), true).expect("queued");
    }
    let alert = AlertRecord {
        id: 1,
        state: crate::record::AlertState::Open,
        merged_into: None,
        kind: AlertKind::SynFlood,
        severity: Severity::High,
        detector: DetectorKind::Rule,
        src_ip: Some("10.0.0.1".parse().expect("ip")),
        dst_ip: Some("10.0.0.2".parse().expect("ip")),
        first_seen: "2026-01-01T00:00:00.000000Z".into(),
        last_seen: "2026-01-01T00:00:01.000000Z".into(),
        count: 1,
        score: None,
        summary: String::new(),
        evidence: serde_json::json!({"attempts": 1000}),
        rate_history: Vec::new(),
        pcap: None,
        direction: None,
        hostgroup: None,
        remote: None,
    };
    s.alert(alert, 1_000).expect("alert queued");
    let c = Connection::open(&p).expect("reader");
    let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap_or(0) };
    let mut rows_then = None;
    for _ in 0..30_000 {
        if count("SELECT count(*) FROM alerts") == 1 {
            rows_then = Some(count("SELECT count(*) FROM statistics"));
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let rows_then = rows_then.expect("the alert was never written");
    let total = (batches * 256) as i64;
    assert!(
        rows_then < total / 2,
        "the alert became readable after {rows_then} of the {total} rows queued before it"
    );
    s.sync().expect("sync");
    assert_eq!(count("SELECT count(*) FROM statistics"), total);
    drop(s);
    std::fs::remove_dir_all(p.parent().expect("dir")).ok();
}

/// With an API-like reader that never pauses, the WAL is still copied into the database and
/// cut back to nothing (SQLite's own checkpoints never reset it while a reader is in it: the
/// soak once found it at 9.8 GB), and the writer's share of it, the truncate, is recorded.
#[test]
fn the_wal_is_copied_and_truncated_while_readers_never_pause() {
    let p = tmp("wal");
    let s = Store::start_with(
        &p,
        Retention::default(),
        Some(open_rw(&p).expect("rw")),
        PENDING_ROWS,
        Duration::from_millis(200),
    )
    .expect("store");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (p, stop) = (p.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let c = open_ro(&p).expect("reader");
                let _n: i64 = c
                    .query_row("SELECT count(*) FROM statistics", [], |r| r.get(0))
                    .expect("read");
                reads += 1;
            }
            reads
        })
    };
    let wal = p.with_file_name("sensor.db-wal");
    let mut peak = 0;
    for b in 0..40u64 {
        let rows = (0..500)
            .map(|i| {
                Msg::Stats(StatsRow {
                    ts: b * 500 + i,
                    seconds: 1,
                    ..StatsRow::default()
                })
            })
            .collect();
        s.send(Msg::Batch(rows), true).expect("queued");
        s.sync().expect("committed");
        peak = peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Writes go on (the writer truncates between its commits) until the WAL was cut back.
    let mut truncated = false;
    for i in 0..100u64 {
        s.stats_row(
            StatsRow {
                ts: 1_000_000 + i,
                seconds: 1,
                ..StatsRow::default()
            },
            true,
        )
        .expect("queued");
        s.sync().expect("committed");
        if std::fs::metadata(&wal).map_or(0, |m| m.len()) < peak / 4 {
            truncated = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader");
    assert!(reads > 0);
    assert!(peak > 0, "the WAL never grew");
    assert!(truncated, "the WAL (peak {peak} bytes) was never cut back");
    assert!(s.stats().checkpoint_max_us.load(Ordering::Relaxed) > 0);
    drop(s);
    std::fs::remove_dir_all(p.parent().expect("dir")).ok();
}
