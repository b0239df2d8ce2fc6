//! Password guessing (MITRE ATT&CK T1110), from finished flows: many short sessions to a
//! service that authenticates, each completing its handshake, carrying little, and failing
//! the same way (the server's answer is about the same size every time).
//!
//! An attempt is a TCP flow to one of `brute_force_ports` (services whose sessions start with
//! a login: ssh, telnet, ftp, rdp, smb, databases, mail), whose handshake completed, that
//! lasted under `brute_force_max_session_s` and moved at most `ATTEMPT_MAX_BYTES` each way.
//! A session that logged in goes on: it lasts, or moves a file. Counted per (source, server,
//! port) over `brute_force_window_s`, and per (server, port) across sources for a guessing
//! spread over many sources (`*`). Not password guessing: one admin opening a session on
//! each of 40 servers (one attempt per key), a user reconnecting a dozen times (under the
//! threshold), a file transfer (not short, not small), a scraper of a web service (HTTP is
//! not in the default ports: a flow cannot tell a login from any other request).

use std::{collections::VecDeque, net::IpAddr};

use sensor_common::proto;

use super::{NS, RuleConfig, Rules, window::SecWindow};
use crate::{
    detect::{
        FastMap,
        alert::{AlertBook, AlertKind, DetectorKind, Firing, Severity},
        evidence::{BruteForceEvidence, Evidence},
    },
    flow::{EndReason, Flow},
};

/// Most bytes either way of a failed login's session (a key exchange with large host keys, a
/// TLS handshake with a certificate chain, the failure message).
const ATTEMPT_MAX_BYTES: u64 = 32 * 1024;
/// Attempts kept per key to judge their sizes (their count is kept apart, per minute).
const KEEP: usize = 32;
/// Of the kept attempts, the share whose server answer is within a quarter of the median:
/// failing the same way.
const SAME_WAY_SHARE: f64 = 0.6;

/// One attempt's sizes and time.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    src: IpAddr,
    client_bytes: u64,
    server_bytes: u64,
    duration_ms: u64,
}

/// Attempts of one key: per minute over the window, and the newest few.
pub(super) struct Attempts {
    per_minute: SecWindow,
    recent: VecDeque<Attempt>,
    sources: FastMap<IpAddr, u64>,
    /// Attempts counted when the rule last fired: it fires again when they grow.
    fired_at: u64,
    last_ns: u64,
}

impl Attempts {
    fn new(cfg: &RuleConfig) -> Self {
        Self {
            per_minute: SecWindow::new(cfg.brute_force_window_s.div_ceil(60).max(1)),
            recent: VecDeque::with_capacity(KEEP),
            sources: FastMap::default(),
            fired_at: 0,
            last_ns: 0,
        }
    }

    fn add(&mut self, a: Attempt, now: u64) {
        self.per_minute.add(now / NS / 60, 1);
        if self.recent.len() == KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(a);
        if self.sources.len() < 4096 || self.sources.contains_key(&a.src) {
            self.sources.insert(a.src, now);
        }
        self.last_ns = now;
    }

    /// Whether the kept attempts fail the same way, and their medians (client bytes, server
    /// bytes, duration in ms).
    fn same_way(&self) -> Option<(u64, u64, u64)> {
        let median = |mut v: Vec<u64>| {
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        let server = median(self.recent.iter().map(|a| a.server_bytes).collect());
        let near = self
            .recent
            .iter()
            .filter(|a| a.server_bytes.abs_diff(server) * 4 <= server.max(1))
            .count();
        (near as f64 >= SAME_WAY_SHARE * self.recent.len() as f64).then(|| {
            (
                median(self.recent.iter().map(|a| a.client_bytes).collect()),
                server,
                median(self.recent.iter().map(|a| a.duration_ms).collect()),
            )
        })
    }
}

/// The brute-force trackers.
#[derive(Default)]
pub(super) struct Brute {
    /// (source, server, port).
    pairs: FastMap<(IpAddr, IpAddr, u16), Attempts>,
    /// (server, port), every source's attempts.
    services: FastMap<(IpAddr, u16), Attempts>,
}

/// A service's name, for evidence only.
fn service_name(port: u16) -> Option<&'static str> {
    Some(match port {
        21 => "ftp",
        22 => "ssh",
        23 => "telnet",
        110 => "pop3",
        143 => "imap",
        389 => "ldap",
        445 => "smb",
        465 | 587 => "smtp-auth",
        993 => "imaps",
        995 => "pop3s",
        1433 => "mssql",
        1521 => "oracle",
        3306 => "mysql",
        3389 => "rdp",
        5432 => "postgres",
        5900 => "vnc",
        5985 | 5986 => "winrm",
        _ => return None,
    })
}

impl Rules {
    /// A finished flow: one connection of a beacon's series, or an attempt at a login service.
    pub fn on_finished(&mut self, f: &Flow, book: &mut AlertBook) {
        self.beacon(f, book);
        self.brute_attempt(f, book);
    }

    /// An attempt at a login service, if the flow is shaped like a failed one.
    fn brute_attempt(&mut self, f: &Flow, book: &mut AlertBook) {
        let cfg = &self.cfg;
        let short = f.duration().as_secs() < cfg.brute_force_max_session_s;
        if f.proto != proto::TCP
            || !cfg.brute_force_ports.contains(&f.dst_port)
            || !f.completed()
            || f.end == EndReason::ActiveTimeout
            || !short
            || f.fwd.bytes > ATTEMPT_MAX_BYTES
            || f.rev.bytes > ATTEMPT_MAX_BYTES
        {
            return;
        }
        let now = f.last_seen_ns;
        let a = Attempt {
            src: f.src,
            client_bytes: f.fwd.bytes,
            server_bytes: f.rev.bytes,
            duration_ms: f.duration().as_millis() as u64,
        };
        let cap = (cfg.max_tracked / 4).max(1);
        let pair = (f.src, f.dst, f.dst_port);
        if self.brute.pairs.contains_key(&pair) || self.brute.pairs.len() < cap {
            let t = self
                .brute
                .pairs
                .entry(pair)
                .or_insert_with(|| Attempts::new(cfg));
            t.add(a, now);
            judge(cfg, Some(f.src), (f.dst, f.dst_port), t, now, book);
        } else {
            self.untracked += 1;
        }
        let svc = (f.dst, f.dst_port);
        if self.brute.services.contains_key(&svc) || self.brute.services.len() < cap {
            let t = self
                .brute
                .services
                .entry(svc)
                .or_insert_with(|| Attempts::new(cfg));
            t.add(a, now);
            judge(cfg, None, svc, t, now, book);
        } else {
            self.untracked += 1;
        }
    }

    pub(super) fn brute_prune(&mut self, now: u64) {
        let w = self.cfg.brute_force_window_s * NS;
        self.brute
            .pairs
            .retain(|_, t| now.saturating_sub(t.last_ns) < w);
        self.brute.services.retain(|_, t| {
            t.sources.retain(|_, last| now.saturating_sub(*last) < w);
            now.saturating_sub(t.last_ns) < w
        });
        crate::detect::shrink(&mut self.brute.pairs);
        crate::detect::shrink(&mut self.brute.services);
    }
}

/// Fires the guessing of `src` (one source) or of every source (`None`) at a service.
fn judge(
    cfg: &RuleConfig,
    src: Option<IpAddr>,
    (server, port): (IpAddr, u16),
    t: &mut Attempts,
    now: u64,
    book: &mut AlertBook,
) {
    let attempts = t.per_minute.sum_at(now / NS / 60);
    let sources = t.sources.len();
    // Across sources: as many attempts as several guessers, from many sources, none of which
    // would be reported alone.
    let (threshold, enough_sources) = match src {
        Some(_) => (cfg.brute_force_attempts, true),
        None => (
            3 * cfg.brute_force_attempts,
            sources >= cfg.brute_force_sources,
        ),
    };
    if attempts < threshold || !enough_sources || attempts <= t.fired_at {
        return;
    }
    let Some((client_bytes, server_bytes, duration_ms)) = t.same_way() else {
        return;
    };
    t.fired_at = attempts;
    let mut sample: Vec<IpAddr> = t.sources.keys().copied().collect();
    sample.sort_unstable();
    sample.truncate(10);
    book.fire(Firing {
        kind: AlertKind::BruteForce,
        detector: DetectorKind::Rule,
        src_ip: src,
        dst_ip: Some(server),
        ts_ns: now,
        severity: Severity::from_ratio(attempts as f64 / threshold as f64).max(Severity::Medium),
        rate: attempts as f64,
        score: None,
        evidence: Evidence::BruteForce(BruteForceEvidence {
            attempts,
            port,
            service: service_name(port),
            sources,
            sample_sources: if src.is_some() { Vec::new() } else { sample },
            median_client_bytes: client_bytes,
            median_server_bytes: server_bytes,
            median_duration_ms: duration_ms,
            window_s: cfg.brute_force_window_s,
        }),
    });
}
