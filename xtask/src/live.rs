//! The sensor running live in the lab: `cargo xtask run` (no `--iface`), the end-to-end test
//! of `cargo xtask test`, and `cargo xtask bench-live`.

use std::{
    io,
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::lab::{
    self, GW, GW_IFACES,
    attack::{self, Kind, Target},
    http_get, in_ns, traffic,
};

/// Port of the sensor's API inside the gateway namespace.
pub const API_PORT: u16 = 8080;

/// `sensor run` on both gateway interfaces, inside the gateway namespace.
pub struct Sensor {
    child: Child,
}

impl Sensor {
    /// Starts the sensor; `log` None inherits the terminal (the running log of detections).
    pub fn start(
        sensor: &Path,
        data_dir: &Path,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Result<Self> {
        let mut c = in_ns(GW, sensor.to_str().context("sensor path is not UTF-8")?);
        c.arg("run");
        for i in GW_IFACES {
            c.args(["--iface", i]);
        }
        c.args(["--listen", &format!("127.0.0.1:{API_PORT}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        let child = match log {
            Some(l) => lab::spawn_logged(c, l)?,
            None => c
                .stdin(Stdio::null())
                .process_group(0)
                .spawn()
                .context("starting the sensor")?,
        };
        let mut s = Self { child };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(status) = s.child.try_wait()? {
                bail!(
                    "the sensor exited with {status} during start-up{}",
                    match log {
                        Some(l) => format!(" (log: {})", l.display()),
                        None => String::new(),
                    }
                );
            }
            if http_get(GW, API_PORT, "/api/status").is_some() {
                return Ok(s);
            }
            thread::sleep(Duration::from_millis(100));
        }
        s.stop();
        bail!("the sensor's API did not come up within 30 s")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// POST `body` to a control endpoint with `token`: (status, JSON answer).
    pub fn post(&self, path: &str, token: &str, body: &Value) -> Option<(u16, Value)> {
        let (code, text) = lab::http(
            GW,
            API_PORT,
            "POST",
            path,
            Some(token),
            Some(&body.to_string()),
        )?;
        Some((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// GET a JSON document from the sensor's API.
    pub fn get(&self, path: &str) -> Option<Value> {
        http_get(GW, API_PORT, path).and_then(|b| serde_json::from_str(&b).ok())
    }

    /// Every alert on the API (newest first), following the cursor.
    pub fn alerts(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/alerts?limit=1000{query}");
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(c);
            }
            let Some(v) = self.get(&path) else { break };
            if let Some(items) = v["items"].as_array() {
                out.extend(items.iter().cloned());
            }
            match v["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => break,
            }
        }
        out
    }

    /// SIGTERM, then wait; the exit status (None when it had to be killed after 10 s).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Some(s);
        }
        // SAFETY: SIGTERM to our own child (ip netns exec has exec'd the sensor).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
        None
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Tears the lab down when dropped: on success, error and panic alike.
pub struct LabGuard;

impl LabGuard {
    pub fn up() -> Result<Self> {
        lab::up()?;
        Ok(Self)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down() {
            eprintln!("lab: teardown failed: {e:#}");
        }
    }
}

/// Whether an alert matches an attack: kind, and attacker/victim as the attack defines them.
pub fn matches(a: &Value, kind: Kind, t: Target) -> bool {
    if a["kind"] != kind.alert() {
        return false;
    }
    let (src, victim) = kind.endpoints(t);
    let src_ok = !kind.names_attacker() || a["src_ip"] == src.to_string();
    let dst_ok = match kind {
        // A sweep has no single victim.
        Kind::PingSweep => true,
        _ => a["dst_ip"] == victim.to_string(),
    };
    src_ok && dst_ok
}

/// Launches `kind` and waits (at most `limit`) for its alert on the API; the time from launch
/// to the alert being readable there.
pub fn detect(
    sensor: &Sensor,
    kind: Kind,
    t: Target,
    limit: Duration,
    log: &Path,
) -> Result<Option<Duration>> {
    Ok(detect_growing(sensor, kind, t, limit, log, false)?.map(|s| s.after))
}

/// What the e2e saw of one attack: when its alert appeared, and whether the alert's figures
/// moved on while the attack still ran.
pub struct Seen {
    pub after: Duration,
    pub id: Value,
    /// For attacks that run until stopped: the alert read again once it has grown (at most
    /// 20 s later), still running.
    pub grew: Option<(bool, String)>,
}

/// Launches `kind` and waits (at most `limit`) for its alert on the API. With `watch`, an
/// attack that runs until stopped is left running until its alert has grown (at most 20 s
/// more): an incident is updated while it runs (state open, `last_seen` and `count` later).
pub fn detect_growing(
    sensor: &Sensor,
    kind: Kind,
    t: Target,
    limit: Duration,
    log: &Path,
    watch: bool,
) -> Result<Option<Seen>> {
    let query = format!("&kind={}", kind.alert());
    let before: Vec<Value> = sensor
        .alerts(&query)
        .iter()
        .filter(|a| matches(a, kind, t))
        .map(|a| a["id"].clone())
        .collect();
    let started = Instant::now();
    let mut running = attack::launch(kind, t, log)?;
    let mut found = None;
    while started.elapsed() < limit {
        let new = |a: &&Value| matches(a, kind, t) && !before.contains(&a["id"]);
        if let Some(a) = sensor.alerts(&query).iter().find(new) {
            found = Some((started.elapsed(), a.clone()));
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let Some((after, first)) = found else {
        running.stop();
        return Ok(None);
    };
    let mut grew = None;
    if watch && !kind.ends_by_itself() {
        // Read again until its figures have moved on (at most 20 s): a flood's do within a
        // second; password guessing's evidence comes in bursts (sessions end together, each
        // counted when its connection has closed), seconds apart.
        let since = Instant::now();
        let mut later;
        loop {
            thread::sleep(Duration::from_millis(250));
            later = sensor
                .get(&format!("/api/alerts/{}", first["id"]))
                .map(|d| d["alert"].clone())
                .unwrap_or(Value::Null);
            let moved = later["last_seen"].as_str() > first["last_seen"].as_str()
                && later["count"].as_u64() > first["count"].as_u64();
            if moved || later["state"] != "open" || since.elapsed() >= Duration::from_secs(20) {
                break;
            }
        }
        let ok = later["state"] == "open"
            && later["last_seen"].as_str() > first["last_seen"].as_str()
            && later["count"].as_u64() > first["count"].as_u64();
        grew = Some((
            ok,
            format!(
                "count {} -> {}, last_seen {} -> {} ({:.1} s later), state {}",
                first["count"],
                later["count"],
                first["last_seen"],
                later["last_seen"],
                since.elapsed().as_secs_f64(),
                later["state"]
            ),
        ));
    }
    running.stop();
    Ok(Some(Seen {
        after,
        id: first["id"].clone(),
        grew,
    }))
}

/// Alerts an operator reads about one attack: those naming its attacker or its victim, less
/// those merged into another (the incident that took them over is counted).
pub fn alerts_of(alerts: &[Value], kind: Kind, t: Target) -> Vec<Value> {
    let (src, victim) = kind.endpoints(t);
    let ends = [src.to_string(), victim.to_string()];
    alerts
        .iter()
        .filter(|a| a["state"] != "merged")
        .filter(|a| {
            ends.iter()
                .any(|e| a["src_ip"].as_str() == Some(e) || a["dst_ip"].as_str() == Some(e))
        })
        .cloned()
        .collect()
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Forwards `127.0.0.1:port` on the host into the sensor's API in the gateway namespace,
/// so the dashboard opens in a normal browser while every lab packet stays in the lab.
fn proxy(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        thread::spawn(move || {
            let upstream = lab::with_ns(GW, || {
                TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], API_PORT)))
            });
            let Ok(Ok(upstream)) = upstream else { return };
            let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
                return;
            };
            let up = thread::spawn(move || {
                let _ignored = io::copy(&mut c2, &mut u2);
                let _ignored = u2.shutdown(std::net::Shutdown::Write);
            });
            let (mut c, mut u) = (client, upstream);
            let _ignored = io::copy(&mut u, &mut c);
            let _ignored = c.shutdown(std::net::Shutdown::Write);
            let _ignored = up.join();
        });
    }
}

/// `cargo xtask run` without `--iface`: lab up, benign traffic, the sensor on the gateway,
/// an attack every `every` seconds in turn, until Ctrl-C; then everything is torn down.
pub fn run_lab(sensor: &Path, listen: SocketAddr, every: Duration) -> Result<()> {
    catch_signals();
    let listener = TcpListener::bind(listen).with_context(|| {
        format!("cannot listen on {listen} for the dashboard (in use? pass --listen)")
    })?;
    let guard = LabGuard::up()?;
    let logs = lab::work_dir("run")?;
    traffic::start(&logs)?;
    let data = crate::workspace_root().join("data/lab");
    std::fs::create_dir_all(&data)?;
    let token = "lab-token-0123456789";
    // The upstream router and the gateway's BGP speaker, when installed.
    let bgp = lab::upstream::available();
    if bgp {
        lab::upstream::start(&logs).context("starting the lab's BGP upstream")?;
    } else {
        eprintln!("lab: gobgpd or FRR missing (cargo xtask setup): upstream mitigation off");
    }
    let config = logs.join("sensor.toml");
    std::fs::write(&config, lab::upstream::sensor_config(bgp, 32, 20_000))?;
    let config_arg = config.to_str().context("config path is not UTF-8")?;
    let mut s = Sensor::start(
        sensor,
        &data,
        &["--token", token, "--config", config_arg],
        None,
    )?;
    thread::spawn(move || proxy(listener));
    eprintln!(
        "\nlab: up. Dashboard: http://{listen}/  (control token: {token})\n\
         lab: benign traffic runs now; attacks start in {} s, one every {} s ({} kinds in turn).\n\
         lab: logs in {}; Ctrl-C tears the lab down.{}\n",
        every.as_secs(),
        every.as_secs(),
        Kind::ALL.len(),
        logs.display(),
        if bgp {
            "\nlab: floods into the LAN are announced to the upstream router (FRR in slab-up) \
             through gobgpd: see Upstream (BGP) on the dashboard"
        } else {
            ""
        }
    );
    let tools_log = logs.join("attacks.log");
    let started = unix_secs();
    // The benign warm-up the model is trained on: at least 30 s, so that flows have finished.
    let mut next = Instant::now() + every.max(Duration::from_secs(30));
    let mut trained = false;
    let mut i = 0usize;
    while !STOP.load(Ordering::SeqCst) {
        if let Ok(Some(status)) = s.child.try_wait() {
            drop(guard);
            bail!("the sensor exited with {status}");
        }
        // The old tool's workflow: a model trained on the benign warm-up, then both detectors
        // watch the attacks (the dashboard's "Train model" does the same).
        if !trained && Instant::now() + Duration::from_secs(3) >= next {
            trained = true;
            let body =
                serde_json::json!({"since": started.to_string(), "until": unix_secs().to_string()});
            match s.post("/api/model/train", token, &body) {
                Some((200, v)) => eprintln!(
                    "lab: model trained on the {} flows of the benign warm-up, threshold {:.3} \
                     (~{} model alerts/hour on it){}; it now judges every finished flow",
                    v["flows"],
                    v["threshold"].as_f64().unwrap_or(0.0),
                    v["expected_alerts_per_hour"],
                    v["threshold_note"]
                        .as_str()
                        .map(|n| format!("; {n}"))
                        .unwrap_or_default()
                ),
                other => eprintln!("lab: training the model failed: {other:?}"),
            }
        }
        if Instant::now() >= next {
            let kind = Kind::ALL[i % Kind::ALL.len()];
            // A fresh attacker/victim pair each time, so each attack opens its own alert.
            let n = (i % usize::from(lab::ALIASES)) as u8;
            let t = Target {
                src: lab::attacker_alias(n),
                victim: lab::victim_alias(n),
            };
            eprintln!(
                "lab: launching {} ({} -> {}); expect a {} alert",
                kind.name(),
                t.src,
                t.victim,
                kind.alert()
            );
            match detect_growing(&s, kind, t, Duration::from_secs(20), &tools_log, true) {
                Ok(Some(seen)) => {
                    let now = s
                        .get(&format!("/api/alerts/{}", seen.id))
                        .map(|d| d["alert"].clone())
                        .unwrap_or(Value::Null);
                    eprintln!(
                        "lab: {} detected {:.2} s after launch: alert #{} ({}): {}",
                        kind.name(),
                        seen.after.as_secs_f64(),
                        seen.id,
                        now["state"].as_str().unwrap_or("?"),
                        now["summary"].as_str().unwrap_or("?")
                    );
                    if bgp {
                        let fs = lab::upstream::show(&logs, "show bgp ipv4 flowspec detail");
                        let rtbh =
                            lab::upstream::show(&logs, "show bgp ipv4 unicast community blackhole");
                        eprintln!(
                            "lab: the upstream router holds {} FlowSpec rule(s) and {} blackholed host(s)",
                            fs.matches("BGP flowspec entry").count(),
                            rtbh.lines()
                                .filter(|l| l.trim_start().starts_with("*>"))
                                .count()
                        );
                    }
                }
                Ok(None) => eprintln!("lab: {} NOT detected within 20 s", kind.name()),
                Err(e) => eprintln!("lab: {}: {e:#}", kind.name()),
            }
            i += 1;
            next = Instant::now() + every;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("lab: stopping the sensor and tearing the lab down");
    let status = s.stop();
    drop(s);
    drop(guard);
    match status {
        Some(st) if st.success() || st.code() == Some(130) => Ok(()),
        Some(st) => bail!("the sensor exited with {st}"),
        None => bail!("the sensor did not stop within 10 s and was killed"),
    }
}

/// Outcome of the end-to-end test: (name, passed, detail) per case.
pub type Cases = Vec<(String, bool, String)>;

/// The end-to-end test: every attack kind detected with the right attacker and victim,
/// benign traffic alone raises nothing, the sensor stops cleanly and detaches.
pub fn e2e(sensor: &Path, benign: Duration) -> Result<Cases> {
    let dir = lab::work_dir("e2e")?;
    let data = dir.join("data");
    let _ignored = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let log = dir.join("attacks.log");
    let _ignored = std::fs::remove_file(&log);
    let _guard = LabGuard::up()?;
    traffic::start(&dir)?;
    // What the sensor sees, recorded, to replay through `sensor replay` afterwards.
    let recorded = dir.join("live-ingress.pcap");
    let capture = lab::record::Capture::ingress(&recorded, &dir.join("tcpdump.log"))?;
    let token = "lab-e2e-token-0123456789";
    let mut s = Sensor::start(
        sensor,
        &data,
        &["--token", token],
        Some(&dir.join("sensor.log")),
    )?;
    let mut cases = Cases::new();

    eprintln!("e2e: {} s of benign traffic", benign.as_secs());
    let benign_start = unix_secs();
    thread::sleep(benign);
    let flows = s
        .get("/api/stats")
        .map_or(0, |v| v["totals"]["flows"].as_u64().unwrap_or(0));
    let alerts = s.alerts("");
    cases.push((
        "benign traffic raises no alert".into(),
        alerts.is_empty() && flows > 0,
        format!(
            "{} alerts ({}), {flows} flows stored",
            alerts.len(),
            summarize(&alerts)
        ),
    ));

    // The dashboard's "Train model" on the stored benign flows: the model is swapped into the
    // running pipeline and judges every flow from then on.
    let trained = s.post(
        "/api/model/train",
        token,
        &serde_json::json!({"since": benign_start.to_string(), "until": (unix_secs() + 1).to_string()}),
    );
    let model_ok = trained
        .as_ref()
        .is_some_and(|(c, v)| *c == 200 && v["loaded"] == true);
    cases.push((
        "model trained from the stored benign flows is loaded live".into(),
        model_ok,
        format!("{trained:?}"),
    ));

    let mut targets = Vec::new();
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        // Fresh attacker and victim addresses per kind: alerts cannot borrow from each other.
        let t = Target {
            src: lab::attacker_alias(i as u8),
            victim: lab::victim_alias(i as u8),
        };
        targets.push((kind, t));
        let found = detect_growing(&s, kind, t, Duration::from_secs(30), &log, true)?;
        let detail = match &found {
            Some(seen) => format!(
                "{} alert after {:.2} s",
                kind.alert(),
                seen.after.as_secs_f64()
            ),
            None => {
                let seen = s.alerts("");
                format!(
                    "no {} alert from {} to {} within 30 s; alerts: {}",
                    kind.alert(),
                    t.src,
                    t.victim,
                    summarize(&seen)
                )
            }
        };
        cases.push((format!("{} detected", kind.name()), found.is_some(), detail));
        if let Some((ok, detail)) = found.and_then(|f| f.grew) {
            cases.push((
                format!("{} alert updated while the attack runs", kind.name()),
                ok,
                detail,
            ));
        }
        thread::sleep(Duration::from_secs(1));
    }

    // One alert per attack: what each attack's attacker and victim are named in, incidents
    // merged into another not counted. Read once the last alerts had time to close.
    thread::sleep(Duration::from_secs(5));
    let all = s.alerts("");
    let per: Vec<(Kind, Vec<Value>)> = targets
        .iter()
        .map(|(k, t)| (*k, alerts_of(&all, *k, *t)))
        .collect();
    let total: usize = per.iter().map(|(_, a)| a.len()).sum();
    let exactly_one = per.iter().filter(|(_, a)| a.len() == 1).count();
    let extra: Vec<String> = per
        .iter()
        .filter(|(_, a)| a.len() != 1)
        .map(|(k, a)| format!("{}: {}", k.name(), summarize(a)))
        .collect();
    eprintln!(
        "e2e: {total} alerts for {} attacks ({:.2} per attack), {exactly_one} with exactly one",
        per.len(),
        total as f64 / per.len() as f64
    );
    cases.push((
        "one alert per attack".into(),
        exactly_one == per.len(),
        format!(
            "{total} alerts for {} attacks, {exactly_one} with exactly one; {}",
            per.len(),
            extra.join("; ")
        ),
    ));

    // The model judged live flows: its anomalies are in the API while the sensor runs.
    let mut anomalies = 0;
    for _ in 0..50 {
        anomalies = s
            .get("/api/anomalies?limit=1000")
            .and_then(|v| v["items"].as_array().map(Vec::len))
            .unwrap_or(0);
        if anomalies > 0 {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    cases.push((
        "model anomalies reach /api/anomalies during sensor run".into(),
        model_ok && anomalies > 0,
        format!("{anomalies} anomalies listed"),
    ));
    let live_alerts = s.alerts("");

    let status = s.stop();
    let attached = GW_IFACES.iter().any(|i| {
        in_ns(GW, "ip")
            .args(["-d", "link", "show", "dev", i])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("prog/xdp"))
    });
    cases.push((
        "sensor stops cleanly and detaches".into(),
        status.is_some_and(|s| s.success()) && !attached,
        format!("exit {status:?}, XDP still attached: {attached}"),
    ));

    // One pipeline, one result: the recorded traffic through `sensor replay` (same config,
    // same model) gives the attack alerts the live sensor gave, kind by kind. Model alerts are
    // compared by presence only: replay scores the benign start too, which live did before the
    // model was trained. Traffic spikes (not attack verdicts) are shown, not compared: a spike
    // at a second's edge can fall either side of it when the kernel's counts arrive per poll.
    let recorded = capture.finish()?;
    cases.push(replay_matches_live(
        sensor,
        &recorded,
        &data,
        &dir,
        &live_alerts,
    )?);
    Ok(cases)
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts of alerts by kind.
fn by_kind<'a>(alerts: impl Iterator<Item = &'a Value>) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for a in alerts {
        *m.entry(a["kind"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    m
}

fn replay_matches_live(
    sensor: &Path,
    recorded: &Path,
    data: &Path,
    dir: &Path,
    live_alerts: &[Value],
) -> Result<(String, bool, String)> {
    let out = dir.join("replay-alerts.jsonl");
    let mut cmd = std::process::Command::new(sensor);
    cmd.arg("replay")
        .arg(recorded)
        .arg("--no-db")
        .arg("--alerts-jsonl")
        .arg(&out);
    let model = data.join("model.json");
    if model.is_file() {
        cmd.arg("--model").arg(&model);
    }
    let run = cmd.output().context("running sensor replay")?;
    if !run.status.success() {
        bail!(
            "sensor replay of the recorded traffic failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let replayed: Vec<Value> = std::fs::read_to_string(&out)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let rules = |v: &std::collections::BTreeMap<String, u64>| {
        v.iter()
            .filter(|(k, _)| *k != "ml_anomaly" && *k != "traffic_spike")
            .map(|(k, n)| (k.clone(), *n))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (live, replay) = (by_kind(live_alerts.iter()), by_kind(replayed.iter()));
    let ml_both = live.contains_key("ml_anomaly") == replay.contains_key("ml_anomaly");
    Ok((
        "replay of the recorded traffic gives the live attack alert kinds and counts".into(),
        rules(&live) == rules(&replay) && ml_both,
        format!("live {live:?}, replay {replay:?}"),
    ))
}

fn summarize(alerts: &[Value]) -> String {
    let mut v: Vec<String> = alerts
        .iter()
        .take(12)
        .map(|a| {
            format!(
                "{} {}->{}",
                a["kind"].as_str().unwrap_or("?"),
                a["src_ip"],
                a["dst_ip"]
            )
        })
        .collect();
    if alerts.len() > 12 {
        v.push(format!("... {} more", alerts.len() - 12));
    }
    v.join(", ")
}
