//! The pcap fallback on hostile input: every capture in tcpdump's test suite (many malformed,
//! some not captures at all) gives flows or a clear error naming the file, never a panic; a file
//! cut mid-record keeps the flows read before the cut.

use std::{fs, path::PathBuf};

use sensor::{
    config::Config,
    drive::replay::{ReplayError, ReplayOptions, ReplaySummary, replay},
};

/// Every file of tcpdump's test suite in the corpora, in name order.
fn tcpdump_tests(corpora: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(corpora.join("tcpdump-tests"))
        .expect("tcpdump-tests readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Replays with detection on and no output files.
fn run(files: &[PathBuf]) -> Result<ReplaySummary, ReplayError> {
    replay(files, ReplayOptions::new(&Config::default()), Vec::new())
}

#[test]
fn every_tcpdump_test_file_gives_flows_or_a_clear_error() {
    let Some(dir) = sensor_tests::corpora() else {
        sensor_tests::skip(
            "every_tcpdump_test_file_gives_flows_or_a_clear_error",
            "../shared/corpora is absent",
        );
        return;
    };
    let files = tcpdump_tests(&dir);
    let (mut ok, mut refused, mut packets) = (0, 0, 0u64);
    for f in &files {
        match run(std::slice::from_ref(f)) {
            Ok(s) => {
                ok += 1;
                packets += s.read.packets;
                assert_eq!(
                    s.read.flow_packets + s.read.non_ip + s.read.parse_errors,
                    s.read.packets,
                    "{}: every packet lands in one class",
                    f.display()
                );
            }
            Err(ReplayError::BadInput(e)) => {
                refused += 1;
                let msg = e.to_string();
                assert!(
                    msg.contains(&*f.to_string_lossy()),
                    "error does not name the file: {msg}"
                );
            }
            Err(e) => panic!("{}: unexpected error kind: {e}", f.display()),
        }
    }
    eprintln!("tcpdump-tests: {ok} read ({packets} packets), {refused} refused with a message");
    assert!(
        ok > 300 && refused > 0,
        "suspicious split: {ok} read, {refused} refused"
    );
}

#[test]
fn a_truncated_capture_keeps_the_flows_before_the_cut() {
    let Some(dir) = sensor_tests::corpora() else {
        sensor_tests::skip(
            "a_truncated_capture_keeps_the_flows_before_the_cut",
            "../shared/corpora is absent",
        );
        return;
    };
    let full = fs::read(dir.join("zeek/web.pcap")).expect("web.pcap");
    let cut = std::env::temp_dir().join(format!("sensor-cut-{}.pcap", std::process::id()));
    fs::write(&cut, &full[..full.len() * 2 / 3 + 7]).expect("write cut copy");
    let s = run(std::slice::from_ref(&cut)).expect("cut file still read");
    let whole = run(&[dir.join("zeek/web.pcap")]).expect("whole file");
    let _ignored = fs::remove_file(&cut);
    assert_eq!(s.truncated.len(), 1, "the cut must be reported");
    assert!(
        s.read.packets > 0 && s.read.packets < whole.read.packets,
        "{} of {} packets",
        s.read.packets,
        whole.read.packets
    );
    assert!(s.flows > 0);
}

#[test]
fn a_file_that_is_not_a_capture_is_bad_input_naming_it() {
    let junk = std::env::temp_dir().join(format!("sensor-junk-{}.pcap", std::process::id()));
    fs::write(&junk, b"this is not a capture file at all").expect("write junk");
    let r = run(std::slice::from_ref(&junk));
    let _ignored = fs::remove_file(&junk);
    match r {
        Err(ReplayError::BadInput(e)) => assert!(e.to_string().contains("sensor-junk-"), "{e}"),
        other => panic!("expected BadInput, got {other:?}"),
    }
    let missing = run(&[PathBuf::from("/nonexistent/x.pcap")]);
    assert!(matches!(missing, Err(ReplayError::BadInput(_))));
}

/// Records what the pipeline hands a sink, in order.
#[derive(Default)]
struct Recorder {
    events: std::rc::Rc<std::cell::RefCell<Vec<(String, u64)>>>,
    stats_packets: std::rc::Rc<std::cell::Cell<u64>>,
}

impl sensor::sink::Sink for Recorder {
    fn wants_stats(&self) -> bool {
        true
    }
    fn alert_opened(
        &mut self,
        a: &sensor::record::AlertRecord,
        _: u64,
    ) -> Result<(), sensor::sink::SinkError> {
        self.events
            .borrow_mut()
            .push((format!("open {}", a.kind.as_str()), a.id));
        Ok(())
    }
    fn alert_closed(
        &mut self,
        a: &sensor::record::AlertRecord,
        _: u64,
    ) -> Result<(), sensor::sink::SinkError> {
        self.events
            .borrow_mut()
            .push((format!("close {}", a.kind.as_str()), a.id));
        Ok(())
    }
    fn stats(&mut self, s: &sensor::record::StatsRow) -> Result<(), sensor::sink::SinkError> {
        assert_eq!(s.seconds, 1, "a row covers one second");
        self.stats_packets.set(self.stats_packets.get() + s.packets);
        Ok(())
    }
}

/// The alert contract every path shares: each alert reaches a sink when it opens, then once
/// more, with the same id, when it closes; the per-second rows add up to the packets.
#[test]
fn sinks_see_each_alert_open_then_close_and_every_packet_in_a_second() {
    let Some(c) = sensor_tests::corpora() else {
        sensor_tests::skip(
            "sinks_see_each_alert_open_then_close",
            "../shared/corpora is absent",
        );
        return;
    };
    let rec = Recorder::default();
    let (events, packets) = (rec.events.clone(), rec.stats_packets.clone());
    let s = replay(
        &[c.join("generated/nmap_sS_top1000.pcap")],
        ReplayOptions::new(&Config::default()),
        vec![Box::new(rec)],
    )
    .expect("replay");
    let ev = events.borrow();
    let opened: Vec<u64> = ev
        .iter()
        .filter(|(k, _)| k.starts_with("open"))
        .map(|x| x.1)
        .collect();
    assert!(!opened.is_empty(), "the scan opened no alert");
    for id in &opened {
        let o = ev
            .iter()
            .position(|(k, i)| k.starts_with("open") && i == id);
        let cl = ev
            .iter()
            .position(|(k, i)| k.starts_with("close") && i == id);
        assert!(
            matches!((o, cl), (Some(o), Some(cl)) if o < cl),
            "alert {id}: open then close expected, got {ev:?}"
        );
    }
    assert_eq!(
        ev.len(),
        2 * opened.len(),
        "one open and one close each: {ev:?}"
    );
    assert_eq!(
        packets.get(),
        s.read.flow_packets,
        "statistics rows hold every packet"
    );
}

/// The online model trained on benign web captures, replayed on a real nmap SYN scan and on
/// a benign capture it did not see: every flow carries a score, the scan's flows score far
/// above the benign ones, and its anomalies reach the scan's alert.
#[test]
fn the_online_model_scores_every_flow_and_separates_a_scan() {
    use sensor::{
        detect::{AlertKind, ml::online::Online},
        drive::replay::{OnlineTrain, train_online},
    };
    let Some(c) = sensor_tests::corpora() else {
        sensor_tests::skip(
            "the_online_model_scores_every_flow",
            "../shared/corpora is absent",
        );
        return;
    };
    let cfg = Config::default();
    let model = train_online(
        &[c.join("zeek/web.pcap"), c.join("zeek/wikipedia.pcap")],
        &cfg,
        OnlineTrain {
            params: Default::default(),
            epochs: 1,
            contamination: 0.1,
            max_alerts_per_hour: None,
        },
    )
    .expect("train on the benign web captures");
    let judge = |file: &str| {
        let mut flows = sensor_tests::FlowRecords::default();
        let s = replay(
            &[c.join(file)],
            ReplayOptions::new(&cfg)
                .with_online(Some(Online::judge(model.clone(), cfg.rules.max_tracked))),
            vec![Box::new(&mut flows) as Box<dyn sensor::sink::Sink + '_>],
        )
        .expect("replay");
        (flows.0, s)
    };
    let (scan, s) = judge("generated/nmap_sS_top1000.pcap");
    let (benign, _) = judge("generated/benign_http_200req.pcap");
    assert!(scan.iter().chain(&benign).all(|f| f.score.is_some()));
    let mean = |v: &[sensor::record::FlowRecord]| {
        v.iter().filter_map(|f| f.score).sum::<f64>() / v.len().max(1) as f64
    };
    let flagged = scan.iter().filter(|f| f.anomalous == Some(true)).count();
    assert!(
        mean(&scan) > 2.0 * mean(&benign) && flagged * 2 > scan.len(),
        "scan mean {:.4} ({flagged} of {} flagged), benign mean {:.4}",
        mean(&scan),
        scan.len(),
        mean(&benign)
    );
    assert!(
        s.alerts.contains_key(&AlertKind::PortScan),
        "{:?}",
        s.alerts
    );
}

/// The same files through the `sensor replay` binary, one process each, as an analyst runs
/// it: exit 0 with a summary, or exit 2 with one error line naming the file; never a panic
/// (101) or a signal, never a hang (30 s each), and memory bounded (the largest child's peak).
#[test]
fn the_replay_command_exits_0_or_2_on_every_tcpdump_test_file() {
    let Some(dir) = sensor_tests::corpora() else {
        sensor_tests::skip(
            "replay command on tcpdump-tests",
            "../shared/corpora is absent",
        );
        return;
    };
    // target/debug/deps/replay_corpus-... -> target/debug/sensor, built with the workspace.
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("sensor")))
        .filter(|p| p.is_file());
    let Some(bin) = bin else {
        assert!(
            !sensor_tests::kernel_tests_required(),
            "target/debug/sensor missing (cargo xtask test builds it)"
        );
        sensor_tests::skip(
            "replay command on tcpdump-tests",
            "no sensor binary beside the tests",
        );
        return;
    };
    let files = tcpdump_tests(&dir);
    let (mut ok, mut refused) = (0, 0);
    for f in &files {
        let mut child = std::process::Command::new(&bin)
            .arg("replay")
            .arg(f)
            .arg("--no-db")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start sensor");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if started.elapsed() > std::time::Duration::from_secs(30) {
                let _ignored = child.kill();
                panic!("{}: sensor replay still running after 30 s", f.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).expect("stderr");
        }
        match status.code() {
            Some(0) => ok += 1,
            Some(2) => {
                refused += 1;
                assert!(
                    err.starts_with("error: ") && err.contains(&*f.to_string_lossy()),
                    "{}: exit 2 without an error naming the file: {err}",
                    f.display()
                );
            }
            other => panic!("{}: exit {other:?}: {err}", f.display()),
        }
    }
    // SAFETY: getrusage fills the struct it is given.
    let peak_kib = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    };
    eprintln!(
        "sensor replay on tcpdump-tests: {ok} exit 0, {refused} exit 2, largest peak {} MiB",
        peak_kib / 1024
    );
    assert!(ok > 300 && refused > 0, "{ok} read, {refused} refused");
    assert!(peak_kib < 512 * 1024, "a replay peaked at {peak_kib} KiB");
}
