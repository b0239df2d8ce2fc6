//! `cargo xtask bench-replay [PCAP...]`: packets/s of `sensor replay` (flows only, no output)
//! next to `tcpdump -r PCAP -w /dev/null` (libpcap's read floor), same files, same run.

use std::{
    fs::{self, File},
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Median wall time of `runs` runs of `cmd`.
fn time_median(mut cmd: impl FnMut() -> Command, runs: usize) -> Result<Duration> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut c = cmd();
        let start = Instant::now();
        let st = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("{c:?}"))?;
        let d = start.elapsed();
        if !st.success() {
            bail!("{c:?} failed: {st}");
        }
        t.push(d);
    }
    t.sort();
    Ok(t[t.len() / 2])
}

/// Packets in a capture, counted by tcpdump.
fn count_packets(pcap: &Path) -> Result<u64> {
    let out = Command::new("tcpdump")
        .args(["-nn", "-q", "-r"])
        .arg(pcap)
        .stderr(Stdio::null())
        .output()?;
    Ok(out.stdout.iter().filter(|b| **b == b'\n').count() as u64)
}

/// Writes a classic pcap of `flows` UDP/TCP flows, `per_flow` packets each, interleaved so the
/// table holds every flow at once (1M packets, 100k flows by default).
pub fn synthetic(path: &Path, flows: u32, per_flow: u32) -> Result<()> {
    let mut w =
        BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    w.write_all(&[
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ])?;
    let mut frame = [0u8; 14 + 20 + 20 + 32];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    for round in 0..per_flow {
        for f in 0..flows {
            let ts_us = u64::from(round) * 1_000_000 + u64::from(f) * 10;
            let tcp = f % 2 == 0;
            let l4_len = if tcp { 20 } else { 8 };
            let ip_len = 20 + l4_len + 32;
            let ip = &mut frame[14..34];
            ip.copy_from_slice(&[
                0x45,
                0,
                0,
                0,
                0,
                0,
                0x40,
                0,
                64,
                if tcp { 6 } else { 17 },
                0,
                0,
                10,
                0,
                0,
                0,
                172,
                16,
                0,
                0,
            ]);
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip[14..16].copy_from_slice(&((f >> 8) as u16).to_be_bytes());
            ip[19] = (f % 200) as u8;
            let l4 = &mut frame[34..];
            l4[0..2].copy_from_slice(&(1024 + (f % 60000) as u16).to_be_bytes());
            l4[2..4].copy_from_slice(&[0, 80]);
            if tcp {
                l4[12] = 0x50;
                l4[13] = if round == 0 { 0x02 } else { 0x18 };
            }
            let len = 14 + ip_len;
            let sec = (ts_us / 1_000_000) as u32;
            let usec = (ts_us % 1_000_000) as u32;
            w.write_all(&sec.to_le_bytes())?;
            w.write_all(&usec.to_le_bytes())?;
            w.write_all(&(len as u32).to_le_bytes())?;
            w.write_all(&(len as u32).to_le_bytes())?;
            w.write_all(&frame[..len])?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Writes `copies` copies of a classic (microsecond, little-endian) pcap one after another,
/// each shifted to start a second after the previous one ends: the same real traffic, as many
/// times over, with time moving forward (zeek's echo trace x12 is the ~1M-packet file of the
/// detection-path benchmark).
pub fn repeated(src: &Path, dst: &Path, copies: u32) -> Result<()> {
    let data = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    if data.len() < 24 || data[0..4] != [0xd4, 0xc3, 0xb2, 0xa1] {
        bail!("{}: not a little-endian microsecond pcap", src.display());
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    // Records: (offset, length) and the time span.
    let mut recs = Vec::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut off = 24;
    while off + 16 <= data.len() {
        let caplen = u32_at(&data, off + 8) as usize;
        if off + 16 + caplen > data.len() {
            break;
        }
        let ts = u64::from(u32_at(&data, off)) * 1_000_000 + u64::from(u32_at(&data, off + 4));
        first = first.min(ts);
        last = last.max(ts);
        recs.push((off, caplen, ts));
        off += 16 + caplen;
    }
    let span = last.saturating_sub(first) + 1_000_000;
    let mut w =
        BufWriter::new(File::create(dst).with_context(|| format!("creating {}", dst.display()))?);
    w.write_all(&data[..24])?;
    for c in 0..u64::from(copies) {
        for (o, caplen, ts) in &recs {
            let t = ts + c * span;
            w.write_all(&((t / 1_000_000) as u32).to_le_bytes())?;
            w.write_all(&((t % 1_000_000) as u32).to_le_bytes())?;
            w.write_all(&data[o + 8..o + 16 + caplen])?;
        }
    }
    w.flush()?;
    Ok(())
}

const NFSTREAM: &str = "import sys, time\nfrom nfstream import NFStreamer\n\
s = NFStreamer(source=sys.argv[1], n_dissections=0, statistical_analysis=False, n_meters=1)\n\
t = time.perf_counter(); n = sum(1 for _ in s); print(n, time.perf_counter() - t)\n";

/// nfstream (PyPI) on one meter, timed inside Python so interpreter start-up is not counted;
/// `None` where it is not installed.
fn nfstream_seconds(pcap: &Path) -> Option<(u64, f64)> {
    let out = Command::new("python3")
        .args(["-c", NFSTREAM])
        .arg(pcap)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The path users run: `sensor replay FILE --data-dir D --model M` (rules, the model, the store
/// and the alerts' evidence files all on) against `tcpdump -r FILE -w /dev/null`, and the same
/// replay with `--no-evidence` (what the second read for the evidence costs), alternating,
/// medians of `runs`.
fn detection_path(sensor: &Path, file: &Path, scratch: &Path, runs: usize) -> Result<()> {
    let model = scratch.join("bench-model.json");
    // Benign captures of the corpora: a realistic model, not one fitted to the file replayed.
    let c = crate::corpora();
    let baseline = [
        c.join("zeek/wikipedia.pcap"),
        c.join("zeek/web.pcap"),
        c.join("generated/benign_http_200req.pcap"),
    ];
    if !model.is_file() {
        let st = Command::new(sensor)
            .arg("train")
            .args(&baseline)
            .arg("--model")
            .arg(&model)
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("training the benchmark model on {baseline:?} failed");
        }
    }
    let packets = count_packets(file)?;
    let data = scratch.join("bench-detect");
    let (mut t_dump, mut t_sensor, mut t_bare) = (Vec::new(), Vec::new(), Vec::new());
    let replay = |evidence: bool| {
        let mut c = Command::new(sensor);
        c.arg("replay")
            .arg(file)
            .arg("--data-dir")
            .arg(&data)
            .arg("--model")
            .arg(&model);
        if !evidence {
            c.arg("--no-evidence");
        }
        c
    };
    let mut files = 0;
    for _ in 0..runs {
        t_dump.push(time_median(
            || {
                let mut c = Command::new("tcpdump");
                c.args(["-r"]).arg(file).args(["-w", "/dev/null"]);
                c
            },
            1,
        )?);
        let _ignored = fs::remove_dir_all(&data);
        t_sensor.push(time_median(|| replay(true), 1)?);
        files = fs::read_dir(data.join("evidence")).map_or(0, |d| d.count());
        let _ignored = fs::remove_dir_all(&data);
        t_bare.push(time_median(|| replay(false), 1)?);
    }
    let _ignored = fs::remove_dir_all(&data);
    t_dump.sort();
    t_sensor.sort();
    t_bare.sort();
    let (tcpdump, sensor_t, bare) = (t_dump[runs / 2], t_sensor[runs / 2], t_bare[runs / 2]);
    let pps = |d: Duration| packets as f64 / d.as_secs_f64();
    println!(
        "{}: {packets} packets, rules + model + store + evidence ({files} alert pcap files); \
         sensor {:.3} s, without evidence {:.3} s, tcpdump {:.3} s (median of {runs})",
        file.display(),
        sensor_t.as_secs_f64(),
        bare.as_secs_f64(),
        tcpdump.as_secs_f64()
    );
    println!(
        "replay+detect pkts/s: sensor={:.0} no-evidence={:.0} tcpdump={:.0} ratio={:.2} \
         (no-evidence ratio={:.2})",
        pps(sensor_t),
        pps(bare),
        pps(tcpdump),
        pps(sensor_t) / pps(tcpdump),
        pps(bare) / pps(tcpdump)
    );
    store_cost(sensor, scratch, runs.max(9))
}

/// What opening and closing the store costs a replay: a capture of a few thousand packets
/// with `--db` and with `--no-db`, alternating, medians (every replay pays it once).
fn store_cost(sensor: &Path, scratch: &Path, runs: usize) -> Result<()> {
    let small = crate::corpora().join("generated/benign_http_200req.pcap");
    if !small.is_file() {
        println!("store open+close: skipped ({} absent)", small.display());
        return Ok(());
    }
    let db = scratch.join("bench-store.db");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        with.push(time_median(
            || {
                let mut c = Command::new(sensor);
                c.arg("replay")
                    .arg(&small)
                    .arg("--db")
                    .arg(&db)
                    .arg("--no-evidence");
                c
            },
            1,
        )?);
        without.push(time_median(
            || {
                let mut c = Command::new(sensor);
                c.arg("replay").arg(&small).arg("--no-db");
                c
            },
            1,
        )?);
    }
    with.sort();
    without.sort();
    let (a, b) = (with[runs / 2], without[runs / 2]);
    println!(
        "store open+close: {:.1} ms ({}: {:.1} ms with the store, {:.1} ms without; median of \
         {runs})",
        (a.as_secs_f64() - b.as_secs_f64()) * 1e3,
        small.display(),
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3
    );
    Ok(())
}

pub fn bench_replay(sensor: &Path, files: &[PathBuf], scratch: &Path) -> Result<()> {
    if files.is_empty() {
        let echo = crate::corpora().join("zeek/echo-connections.pcap");
        if echo.is_file() {
            fs::create_dir_all(scratch)?;
            let x12 = scratch.join("echo-connections-x12.pcap");
            if !x12.is_file() {
                repeated(&echo, &x12, 12)?;
            }
            detection_path(sensor, &x12, scratch, 7)?;
        }
        // An attack capture: its alerts' files are written by a second read.
        let flood = crate::corpora().join("generated/hping3_synflood_20k.pcap");
        if flood.is_file() {
            fs::create_dir_all(scratch)?;
            let x10 = scratch.join("synflood-x10.pcap");
            if !x10.is_file() {
                // The capture is pcapng: tcpdump rewrites it as the classic pcap `repeated` reads.
                let classic = scratch.join("synflood.pcap");
                let st = Command::new("tcpdump")
                    .arg("-r")
                    .arg(&flood)
                    .arg("-w")
                    .arg(&classic)
                    .stderr(Stdio::null())
                    .status()?;
                if !st.success() {
                    bail!("tcpdump could not rewrite {}", flood.display());
                }
                repeated(&classic, &x10, 10)?;
            }
            detection_path(sensor, &x10, scratch, 7)?;
        }
    }
    let mut files = files.to_vec();
    if files.is_empty() {
        let echo = crate::corpora().join("zeek/echo-connections.pcap");
        if echo.is_file() {
            files.push(echo);
        }
        fs::create_dir_all(scratch)?;
        let synth = scratch.join("synthetic-1m-100k.pcap");
        if !synth.is_file() {
            synthetic(&synth, 100_000, 10)?;
        }
        files.push(synth);
    }
    for f in &files {
        let packets = count_packets(f)?;
        // Alternate the two commands so load drift on the machine hits both alike.
        let runs = 9;
        let (mut t_dump, mut t_sensor) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            t_dump.push(time_median(
                || {
                    let mut c = Command::new("tcpdump");
                    c.args(["-r"]).arg(f).args(["-w", "/dev/null"]);
                    c
                },
                1,
            )?);
            t_sensor.push(time_median(
                || {
                    let mut c = Command::new(sensor);
                    c.arg("replay").args(["--no-detect", "--no-db"]).arg(f);
                    c
                },
                1,
            )?);
        }
        t_dump.sort();
        t_sensor.sort();
        let (tcpdump, sensor_t) = (t_dump[runs / 2], t_sensor[runs / 2]);
        let pps = |d: Duration| packets as f64 / d.as_secs_f64();
        println!(
            "{}: {packets} packets; sensor {:.3} s, tcpdump {:.3} s (median of {runs})",
            f.display(),
            sensor_t.as_secs_f64(),
            tcpdump.as_secs_f64()
        );
        match nfstream_seconds(f) {
            Some((flows, secs)) => println!(
                "nfstream (1 meter, no dissection, no statistics): {flows} flows, {:.3} s, {:.0} pkts/s, sensor/nfstream={:.1}x",
                secs,
                packets as f64 / secs,
                pps(sensor_t) / (packets as f64 / secs)
            ),
            None => println!("nfstream: not installed (pip install nfstream), skipped"),
        }
        println!(
            "replay pkts/s: sensor={:.0} tcpdump={:.0} ratio={:.2}",
            pps(sensor_t),
            pps(tcpdump),
            pps(sensor_t) / pps(tcpdump)
        );
    }
    Ok(())
}
