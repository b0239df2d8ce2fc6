//! Acting on alerts at XDP (opt-in): blocking attacking sources and rate-limiting floods
//! toward their victims, every entry with an expiry the kernel enforces.
//!
//! The [`Mitigator`] owns the intended state (which prefixes are blocked and which victims are
//! protected, until when, and why) and keeps the kernel's `BLOCKLIST` and `RATE_LIMITS` maps
//! equal to it; it lives on the live loop's thread, next to the program. Policy:
//!
//! - an alert of a kind listed in `[mitigation] kinds` (`--mitigate`) with a single source
//!   blocks that source (the host address), never the destination: a victim is never blocked;
//! - a flood alert without a single source (spoofed or many sources) rate-limits the flooded
//!   protocol toward its victim instead of blocking millions of forged addresses;
//! - nothing the [`Allowlist`] protects is ever blocked (configured prefixes, this host's
//!   addresses and next hops, non-endpoint ranges); a refused block is an audit row too;
//! - an entry expires after its TTL (default 10 min) in the kernel itself; the sweep removes
//!   it, or renews it while the alert that caused it is still open (the attack goes on:
//!   dropped packets are still counted, so the alert stays open exactly as long).
//!
//! Every change is a [`MitigationEvent`], written to the store's `mitigations` table.

pub mod allow;
pub mod bgp;
pub mod speaker;
pub mod upstream;

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};

use ipnet::IpNet;
use sensor_common::{RateKey, RateLimit, gates, proto};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use self::allow::Allowlist;
use crate::report::Report;
use crate::{
    check::Invalid,
    detect::{AlertKind, alert::Alert},
    kernel::{KernelError, SensorProgram, poller::monotonic_to_unix_offset},
    metrics::{Gauge, Registry},
    record::rfc3339_us,
};

const NS: u64 = 1_000_000_000;
/// Longest TTL accepted (a week): a block is a response to an attack, not a policy.
pub const MAX_TTL_S: u64 = 7 * 24 * 3600;

/// `[mitigation]` in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MitigationConfig {
    /// Alert kinds that act (empty: no automatic mitigation; the API can still block).
    pub kinds: Vec<AlertKind>,
    /// Seconds an entry lives (renewed while its alert stays open).
    pub ttl_s: u64,
    /// Packets per second let through to a victim of a multi-source flood, per flooded
    /// protocol (SYNs only for a SYN flood: established connections are not limited).
    pub rate_limit_pps: u64,
    /// Packets allowed in a burst above that rate.
    pub rate_limit_burst: u64,
    /// Prefixes never blocked, on top of this host's addresses and next hops.
    pub allow: Vec<IpNet>,
    /// Entries of the kernel blocklist.
    pub max_entries: u32,
}

impl Default for MitigationConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            ttl_s: 600,
            rate_limit_pps: 1000,
            rate_limit_burst: 200,
            allow: Vec::new(),
            max_entries: sensor_common::DEFAULT_BLOCK_ENTRIES,
        }
    }
}

impl MitigationConfig {
    /// Range checks serde cannot do; the message names the key.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.ttl_s == 0 || self.ttl_s > MAX_TTL_S {
            return Err(Invalid::new(
                "mitigation.ttl_s",
                format!("must be within 1 and {MAX_TTL_S}, not {}", self.ttl_s),
            ));
        }
        if self.rate_limit_pps == 0 {
            return Err(Invalid::new(
                "mitigation.rate_limit_pps",
                "must be positive",
            ));
        }
        if self.max_entries == 0 {
            return Err(Invalid::new("mitigation.max_entries", "must be positive"));
        }
        if self.kinds.contains(&AlertKind::TrafficSpike) {
            return Err(Invalid::new(
                "mitigation.kinds",
                "cannot hold traffic_spike: it says a host is busy, not who attacks it",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MitigateError {
    #[error("{0}")]
    BadPrefix(String),
    #[error("{0}")]
    Refused(String),
    #[error("the blocklist is full ({0} entries); remove entries or raise mitigation.max_entries")]
    Full(u32),
    #[error("no entry {0}")]
    NotFound(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Who asked for an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Api,
    Alert { id: u64, kind: AlertKind },
}

/// One audit row: a block, renewal, removal, expiry or refusal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MitigationEvent {
    /// Unix ns.
    pub ts_ns: u64,
    /// block, renew, unblock, expire, refuse, rate_limit.
    pub action: String,
    /// What the entry acts on: a prefix, or `rate:ADDR/PROTO` for a rate limit.
    pub target: String,
    /// Unix ns the entry ends (block, renew, rate_limit).
    pub expires_ns: Option<u64>,
    pub reason: String,
    /// api or alert.
    pub origin: String,
    /// The run-local id of the alert that caused it.
    pub alert_id: Option<u64>,
    pub alert_kind: Option<AlertKind>,
    /// Packets and bytes the entry dropped (on removal and expiry).
    pub packets: u64,
    pub bytes: u64,
}

struct Entry {
    expires_ns: u64,
    added_ns: u64,
    reason: String,
    origin: Origin,
}

struct Limit {
    entry: Entry,
    victim: IpAddr,
    proto: u8,
    syn_only: bool,
    dst_port: u16,
}

/// The intended mitigation state and its kernel copy.
pub struct Mitigator {
    cfg: MitigationConfig,
    allow: Allowlist,
    blocks: BTreeMap<IpNet, Entry>,
    limits: BTreeMap<RateKey, Limit>,
    /// Alerts that caused an entry and have not closed.
    open: HashSet<u64>,
    /// Whether the kernel maps hold the state (false until a program is loaded).
    installed: bool,
    events: Vec<MitigationEvent>,
}

/// The 16-byte kernel form of a prefix: (address, prefix length over 128 bits).
fn kernel_key(net: &IpNet) -> ([u8; 16], u32) {
    match net {
        IpNet::V4(n) => (
            n.network().to_ipv6_mapped().octets(),
            96 + u32::from(n.prefix_len()),
        ),
        IpNet::V6(n) => (n.network().octets(), u32::from(n.prefix_len())),
    }
}

fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// A prefix as given (an address alone is its host prefix), truncated to its network;
/// IPv4-mapped IPv6 is IPv4.
pub fn parse_prefix(s: &str) -> Result<IpNet, MitigateError> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            MitigateError::BadPrefix(format!(
                "{s:?} is not an address or prefix (like 203.0.113.7, 198.51.100.0/24, 2001:db8::/48)"
            ))
        })?,
    };
    Ok(match net {
        IpNet::V6(n) => match n.network().to_ipv4_mapped() {
            Some(v4) if n.prefix_len() >= 96 => {
                IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96).unwrap_or(net)
            }
            _ => net,
        },
        n => n,
    }
    .trunc())
}

fn proto_name(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        proto::ICMPV6 => "icmpv6",
        _ => "any",
    }
}

fn rate_target(victim: IpAddr, p: u8) -> String {
    format!("rate:{victim}/{}", proto_name(p))
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Unix ns to the kernel's `CLOCK_MONOTONIC` ns (0 stays "never").
fn to_mono(unix_ns: u64) -> u64 {
    if unix_ns == 0 {
        return 0;
    }
    (i128::from(unix_ns) - monotonic_to_unix_offset()).clamp(1, i128::from(u64::MAX)) as u64
}

impl Mitigator {
    pub fn new(cfg: MitigationConfig) -> Self {
        let allow = Allowlist::new(cfg.allow.clone());
        Self {
            cfg,
            allow,
            blocks: BTreeMap::new(),
            limits: BTreeMap::new(),
            open: HashSet::new(),
            installed: false,
            events: Vec::new(),
        }
    }

    pub fn config(&self) -> &MitigationConfig {
        &self.cfg
    }

    /// Whether alerts of `kind` act.
    pub fn acts_on(&self, kind: AlertKind) -> bool {
        self.cfg.kinds.contains(&kind)
    }

    /// Audit rows since the last call.
    pub fn take_events(&mut self) -> Vec<MitigationEvent> {
        std::mem::take(&mut self.events)
    }

    fn event(&mut self, action: &str, target: String, e: &Entry, packets: u64, bytes: u64) {
        let (alert_id, alert_kind) = match e.origin {
            Origin::Api => (None, None),
            Origin::Alert { id, kind } => (Some(id), Some(kind)),
        };
        let expires = matches!(action, "block" | "renew" | "rate_limit").then_some(e.expires_ns);
        self.events.push(MitigationEvent {
            ts_ns: unix_now_ns(),
            action: action.into(),
            target,
            expires_ns: expires,
            reason: e.reason.clone(),
            origin: if alert_id.is_some() { "alert" } else { "api" }.into(),
            alert_id,
            alert_kind,
            packets,
            bytes,
        });
    }

    /// Writes the whole state into a freshly loaded program (once), then keeps it in step.
    pub fn sync(&mut self, prog: Option<&mut SensorProgram>) -> Result<(), KernelError> {
        let Some(prog) = prog else {
            return Ok(());
        };
        if self.installed {
            return Ok(());
        }
        for (net, e) in &self.blocks {
            let (addr, len) = kernel_key(net);
            prog.block(addr, len, to_mono(e.expires_ns))?;
        }
        for (k, l) in &self.limits {
            prog.rate_limit(*k, self.kernel_limit(l))?;
        }
        self.installed = true;
        self.set_bits(prog)
    }

    fn set_bits(&self, prog: &mut SensorProgram) -> Result<(), KernelError> {
        prog.set_gate(gates::BLOCKLIST, !self.blocks.is_empty())?;
        prog.set_gate(gates::RATE_LIMITS, !self.limits.is_empty())
    }

    fn kernel_limit(&self, l: &Limit) -> RateLimit {
        let interval = (NS / self.cfg.rate_limit_pps.max(1)).max(1);
        RateLimit {
            interval_ns: interval,
            burst_ns: interval.saturating_mul(self.cfg.rate_limit_burst),
            expires_ns: to_mono(l.entry.expires_ns),
            dst_port: l.dst_port,
            syn_only: u8::from(l.syn_only),
            ..RateLimit::default()
        }
    }

    /// Blocks `net` until `ttl_s` from now. Refused for what the allowlist protects; an
    /// existing entry is replaced (new expiry and reason).
    pub fn block(
        &mut self,
        net: IpNet,
        ttl_s: u64,
        reason: String,
        origin: Origin,
        prog: Option<&mut SensorProgram>,
    ) -> Result<Value, MitigateError> {
        let net = net.trunc();
        if let Some(why) = self.allow.refusal(&net) {
            let e = Entry {
                expires_ns: 0,
                added_ns: unix_now_ns(),
                reason: format!("{reason}; refused: {why}"),
                origin,
            };
            self.event("refuse", net.to_string(), &e, 0, 0);
            return Err(MitigateError::Refused(why));
        }
        if !self.blocks.contains_key(&net) && self.blocks.len() >= self.cfg.max_entries as usize {
            return Err(MitigateError::Full(self.cfg.max_entries));
        }
        let now = unix_now_ns();
        let e = Entry {
            expires_ns: now + ttl_s.clamp(1, MAX_TTL_S) * NS,
            added_ns: now,
            reason,
            origin,
        };
        if let Some(p) = prog
            && self.installed
        {
            let (addr, len) = kernel_key(&net);
            p.block(addr, len, to_mono(e.expires_ns))?;
            self.blocks.insert(net, e);
            self.set_bits(p)?;
        } else {
            self.blocks.insert(net, e);
        }
        if let Origin::Alert { id, .. } = origin {
            self.open.insert(id);
        }
        let e = &self.blocks[&net];
        let view = self.block_view(&net, e, None);
        let e = Entry {
            expires_ns: e.expires_ns,
            added_ns: e.added_ns,
            reason: e.reason.clone(),
            origin: e.origin,
        };
        self.event("block", net.to_string(), &e, 0, 0);
        Ok(view)
    }

    /// What an alert that just opened asks for, if its kind acts.
    pub fn alert_opened(&mut self, a: &Alert, prog: Option<&mut SensorProgram>) {
        if !self.acts_on(a.kind) {
            return;
        }
        let origin = Origin::Alert {
            id: a.id,
            kind: a.kind,
        };
        let ttl = self.cfg.ttl_s;
        let reason = format!("{} alert {}", a.kind.as_str(), a.id);
        let r = match (a.src_ip, a.dst_ip) {
            // The attacker's side only: the source of a single-source alert.
            (Some(src), _) => self.block(IpNet::from(src), ttl, reason, origin, prog),
            (None, Some(victim)) => match flood_vector(a) {
                Some((p, syn_only, port)) => {
                    self.protect(victim, p, syn_only, port, ttl, reason, origin, prog)
                }
                None => return,
            },
            (None, None) => return,
        };
        match r {
            Ok(v) => {
                tracing::warn!(alert = a.id, kind = a.kind.as_str(), entry = %v["target"], "mitigation in force")
            }
            Err(e) => {
                tracing::warn!(alert = a.id, kind = a.kind.as_str(), error = %Report(&e), "mitigation not applied")
            }
        }
    }

    /// An alert closed: entries it caused expire at their time instead of being renewed.
    pub fn alert_closed(&mut self, id: u64) {
        self.open.remove(&id);
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one limit's parameters, each used once"
    )]
    fn protect(
        &mut self,
        victim: IpAddr,
        p: u8,
        syn_only: bool,
        dst_port: u16,
        ttl_s: u64,
        reason: String,
        origin: Origin,
        prog: Option<&mut SensorProgram>,
    ) -> Result<Value, MitigateError> {
        let key = RateKey {
            addr: mapped(victim),
            proto: p,
            _pad: [0; 3],
        };
        if !self.limits.contains_key(&key) && self.limits.len() >= self.cfg.max_entries as usize {
            return Err(MitigateError::Full(self.cfg.max_entries));
        }
        let now = unix_now_ns();
        let l = Limit {
            entry: Entry {
                expires_ns: now + ttl_s.clamp(1, MAX_TTL_S) * NS,
                added_ns: now,
                reason,
                origin,
            },
            victim,
            proto: p,
            syn_only,
            dst_port,
        };
        if let Some(prog) = prog
            && self.installed
        {
            prog.rate_limit(key, self.kernel_limit(&l))?;
            self.limits.insert(key, l);
            self.set_bits(prog)?;
        } else {
            self.limits.insert(key, l);
        }
        if let Origin::Alert { id, .. } = origin {
            self.open.insert(id);
        }
        let l = &self.limits[&key];
        let view = self.limit_view(&key, l, None);
        let e = Entry {
            expires_ns: l.entry.expires_ns,
            added_ns: l.entry.added_ns,
            reason: format!(
                "{}; {} pps (burst {}) of {}{} toward the victim",
                l.entry.reason,
                self.cfg.rate_limit_pps,
                self.cfg.rate_limit_burst,
                if l.syn_only { "SYNs" } else { proto_name(p) },
                if dst_port != 0 {
                    format!(" to port {dst_port}")
                } else {
                    String::new()
                }
            ),
            origin: l.entry.origin,
        };
        self.event("rate_limit", rate_target(victim, p), &e, 0, 0);
        Ok(view)
    }

    /// Removes an entry by its target (a prefix, or `rate:ADDR/PROTO`); an entry removed by
    /// hand is not renewed by its alert.
    pub fn remove(
        &mut self,
        target: &str,
        prog: Option<&mut SensorProgram>,
    ) -> Result<Value, MitigateError> {
        if let Some(rest) = target.strip_prefix("rate:") {
            let key = self
                .limits
                .iter()
                .find(|(_, l)| rate_target(l.victim, l.proto) == format!("rate:{rest}"))
                .map(|(k, _)| *k)
                .ok_or_else(|| MitigateError::NotFound(target.to_owned()))?;
            return self.drop_limit(key, "unblock", prog);
        }
        let net = parse_prefix(target)?;
        if !self.blocks.contains_key(&net) {
            return Err(MitigateError::NotFound(net.to_string()));
        }
        self.drop_block(net, "unblock", prog)
    }

    fn drop_block(
        &mut self,
        net: IpNet,
        action: &str,
        prog: Option<&mut SensorProgram>,
    ) -> Result<Value, MitigateError> {
        let mut last = None;
        if let Some(p) = prog
            && self.installed
        {
            let (addr, len) = kernel_key(&net);
            last = p.unblock(addr, len)?;
            let e = self.blocks.remove(&net);
            self.set_bits(p)?;
            self.finish_removal(
                net.to_string(),
                e,
                action,
                last.map(|l| (l.packets, l.bytes)),
            );
        } else {
            let e = self.blocks.remove(&net);
            self.finish_removal(net.to_string(), e, action, None);
        }
        Ok(
            json!({ "target": net.to_string(), "packets": last.map_or(0, |l| l.packets), "bytes": last.map_or(0, |l| l.bytes) }),
        )
    }

    fn drop_limit(
        &mut self,
        key: RateKey,
        action: &str,
        prog: Option<&mut SensorProgram>,
    ) -> Result<Value, MitigateError> {
        let mut last = None;
        let l = self.limits.remove(&key);
        if let Some(p) = prog
            && self.installed
        {
            last = p.remove_rate_limit(key)?;
            self.set_bits(p)?;
        }
        let target = l
            .as_ref()
            .map_or_else(String::new, |l| rate_target(l.victim, l.proto));
        self.finish_removal(
            target.clone(),
            l.map(|l| l.entry),
            action,
            last.map(|l| (l.dropped, l.dropped_bytes)),
        );
        Ok(
            json!({ "target": target, "packets": last.map_or(0, |l| l.dropped), "bytes": last.map_or(0, |l| l.dropped_bytes) }),
        )
    }

    fn finish_removal(
        &mut self,
        target: String,
        e: Option<Entry>,
        action: &str,
        counts: Option<(u64, u64)>,
    ) {
        if let Some(e) = e {
            if let Origin::Alert { id, .. } = e.origin
                && action == "unblock"
            {
                self.open.remove(&id);
            }
            let (p, b) = counts.unwrap_or_default();
            self.event(action, target, &e, p, b);
        }
    }

    /// Ends expired entries: renewed while their alert is open, removed otherwise.
    pub fn sweep(&mut self, mut prog: Option<&mut SensorProgram>) -> Result<(), MitigateError> {
        let now = unix_now_ns();
        let due: Vec<IpNet> = self
            .blocks
            .iter()
            .filter(|(_, e)| e.expires_ns <= now)
            .map(|(n, _)| *n)
            .collect();
        for net in due {
            let origin = self.blocks[&net].origin;
            match origin {
                Origin::Alert { id, .. } if self.open.contains(&id) => {
                    let reason = self.blocks[&net].reason.clone();
                    self.block(net, self.cfg.ttl_s, reason, origin, prog.as_deref_mut())?;
                    if let Some(ev) = self.events.last_mut() {
                        ev.action = "renew".into();
                    }
                }
                _ => {
                    self.drop_block(net, "expire", prog.as_deref_mut())?;
                }
            }
        }
        let due: Vec<RateKey> = self
            .limits
            .iter()
            .filter(|(_, l)| l.entry.expires_ns <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let l = &self.limits[&key];
            match l.entry.origin {
                Origin::Alert { id, .. } if self.open.contains(&id) => {
                    let (v, p, s, d, r, o) = (
                        l.victim,
                        l.proto,
                        l.syn_only,
                        l.dst_port,
                        l.entry.reason.clone(),
                        l.entry.origin,
                    );
                    self.protect(v, p, s, d, self.cfg.ttl_s, r, o, prog.as_deref_mut())?;
                    if let Some(ev) = self.events.last_mut() {
                        ev.action = "renew".into();
                    }
                }
                _ => {
                    self.drop_limit(key, "expire", prog.as_deref_mut())?;
                }
            }
        }
        Ok(())
    }

    fn block_view(&self, net: &IpNet, e: &Entry, counts: Option<(u64, u64)>) -> Value {
        let (alert_id, alert_kind) = match e.origin {
            Origin::Api => (None, None),
            Origin::Alert { id, kind } => (Some(id), Some(kind)),
        };
        let (packets, bytes) = counts.unwrap_or_default();
        json!({
            "target": net.to_string(),
            "kind": "block",
            "added": rfc3339_us(e.added_ns),
            "expires": rfc3339_us(e.expires_ns),
            "expires_in_s": e.expires_ns.saturating_sub(unix_now_ns()) / NS,
            "reason": e.reason,
            "origin": if alert_id.is_some() { "alert" } else { "api" },
            "alert_id": alert_id,
            "alert_kind": alert_kind,
            "enforced": self.installed,
            "dropped_packets": packets,
            "dropped_bytes": bytes,
        })
    }

    fn limit_view(&self, k: &RateKey, l: &Limit, kernel: Option<&RateLimit>) -> Value {
        let mut v = self.block_view(
            &IpNet::from(l.victim),
            &l.entry,
            kernel.map(|r| (r.dropped, r.dropped_bytes)),
        );
        v["target"] = json!(rate_target(l.victim, k.proto));
        v["kind"] = json!("rate_limit");
        v["victim"] = json!(l.victim.to_string());
        v["proto"] = json!(proto_name(l.proto));
        v["syn_only"] = json!(l.syn_only);
        v["dst_port"] = json!((l.dst_port != 0).then_some(l.dst_port));
        v["pps"] = json!(self.cfg.rate_limit_pps);
        v["burst"] = json!(self.cfg.rate_limit_burst);
        v["passed_packets"] = json!(kernel.map_or(0, |r| r.passed));
        v
    }

    /// Every entry with the kernel's drop counters.
    pub fn list(&self, prog: Option<&SensorProgram>) -> Result<Vec<Value>, MitigateError> {
        let (blocks, limits) = match prog.filter(|_| self.installed) {
            Some(p) => (p.blocklist()?, p.rate_limits()?),
            None => (Vec::new(), BTreeMap::new()),
        };
        let mut out: Vec<Value> = self
            .blocks
            .iter()
            .map(|(net, e)| {
                let (addr, len) = kernel_key(net);
                let c = blocks
                    .iter()
                    .find(|(a, l, _)| *a == addr && *l == len)
                    .map(|(_, _, b)| (b.packets, b.bytes));
                self.block_view(net, e, c)
            })
            .collect();
        out.extend(
            self.limits
                .iter()
                .map(|(k, l)| self.limit_view(k, l, limits.get(k))),
        );
        Ok(out)
    }

    /// Shutdown: every entry ends with the program (its maps go with it); each gets a "stop"
    /// row so the audit log says when it stopped acting.
    pub fn shutdown(&mut self, mut prog: Option<&mut SensorProgram>) {
        let nets: Vec<IpNet> = self.blocks.keys().copied().collect();
        for net in nets {
            if let Err(e) = self.drop_block(net, "stop", prog.as_deref_mut()) {
                tracing::warn!(error = %Report(&e), "removing a block at shutdown");
            }
        }
        let keys: Vec<RateKey> = self.limits.keys().copied().collect();
        for k in keys {
            if let Err(e) = self.drop_limit(k, "stop", prog.as_deref_mut()) {
                tracing::warn!(error = %Report(&e), "removing a rate limit at shutdown");
            }
        }
    }

    /// Prefixes and addresses that are never blocked now.
    pub fn protected(&mut self) -> Vec<String> {
        self.allow.protected()
    }

    pub fn entries(&self) -> (usize, usize) {
        (self.blocks.len(), self.limits.len())
    }
}

/// Entries in force on `/metrics` (the drops are the kernel's counters).
pub struct MitigationMetrics {
    blocks: Gauge,
    limits: Gauge,
}

impl MitigationMetrics {
    pub fn new(m: &Registry) -> Self {
        Self {
            blocks: m.gauge(
                "sensor_blocklist_entries",
                "Blocked source prefixes in force.",
            ),
            limits: m.gauge(
                "sensor_rate_limit_entries",
                "Per-destination rate limits in force.",
            ),
        }
    }

    pub fn publish(&self, m: &Mitigator) {
        let (b, r) = m.entries();
        self.blocks.set(b as u64);
        self.limits.set(r as u64);
    }
}

/// The protocol, SYN-only flag and port a flood alert without a single source is limited by:
/// from its evidence's vector (what the rule measured), or its kind.
fn flood_vector(a: &Alert) -> Option<(u8, bool, u16)> {
    use crate::detect::evidence::{Evidence, Vector};
    let (vector, port) = match &a.evidence {
        Evidence::Flood(f) => (Some(f.vector), f.dst_port.unwrap_or(0)),
        _ => (None, 0),
    };
    let icmp = match a.dst_ip {
        Some(IpAddr::V6(_)) => proto::ICMPV6,
        _ => proto::ICMP,
    };
    match (a.kind, vector) {
        (_, Some(Vector::TcpSyn)) => Some((proto::TCP, true, port)),
        (_, Some(Vector::TcpSynAckReflection)) => Some((proto::TCP, false, 0)),
        (_, Some(Vector::Udp | Vector::UdpReflection)) => Some((proto::UDP, false, 0)),
        (_, Some(Vector::Icmp)) => Some((icmp, false, 0)),
        (AlertKind::SynFlood, _) => Some((proto::TCP, true, port)),
        (AlertKind::UdpFlood, _) => Some((proto::UDP, false, 0)),
        (AlertKind::IcmpFlood, _) => Some((icmp, false, 0)),
        // A flood of every protocol at once: all of it, limited.
        (AlertKind::Ddos, _) => Some((0, false, 0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
