//! Syslog output for alerts: RFC 5424 messages over UDP, TCP (RFC 6587 octet counting) or the
//! local socket, to the collector in `[syslog] target`.
//!
//! Each alert is one message: the facility from the config, the severity from the alert's
//! (critical -> crit, high -> err, medium -> warning, low -> notice), MSGID the alert kind,
//! structured data `[alert@32473 ...]` with its fields (32473 is the enterprise number RFC 5612
//! reserves for documentation; a site with its own number sets `sd_id`), and a one-line text.
//! Messages go through a bounded queue to a thread of their own: detection never waits on a
//! collector; a full queue counts the alert dropped, a dead collector is logged once a minute
//! and the TCP connection is retried at the next message.

use std::{
    io::Write as _,
    net::{TcpStream, ToSocketAddrs as _, UdpSocket},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::worker::Worker;
use super::{AlertSink, Output, OutputConfig, Sink, SinkError};
use crate::report::Report;
use crate::{
    check::Invalid,
    metrics::Registry,
    record::{AlertRecord, Severity},
};

/// `[syslog]` in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogConfig {
    /// `udp://HOST:PORT`, `tcp://HOST:PORT` or `unix:///dev/log`; no syslog when empty.
    pub target: String,
    /// kern, user, daemon, auth, authpriv, syslog, local0 .. local7.
    pub facility: String,
    pub app_name: String,
    /// The HOSTNAME field (default: the host name).
    pub hostname: Option<String>,
    /// Structured-data id of the alert element.
    pub sd_id: String,
    /// Alerts waiting to be sent at most.
    pub queue: usize,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            target: String::new(),
            facility: "local0".into(),
            app_name: "sensor".into(),
            hostname: None,
            sd_id: "alert@32473".into(),
            queue: 10_000,
        }
    }
}

/// Where messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Udp(String),
    Tcp(String),
    Unix(PathBuf),
}

impl SyslogConfig {
    /// The parsed target (`None`: off) and facility code; the message names the bad key.
    pub fn parse(&self) -> Result<Option<(Target, u8)>, Invalid> {
        if self.target.is_empty() {
            return Ok(None);
        }
        let t = if let Some(a) = self.target.strip_prefix("udp://") {
            Target::Udp(a.to_owned())
        } else if let Some(a) = self.target.strip_prefix("tcp://") {
            Target::Tcp(a.to_owned())
        } else if let Some(p) = self.target.strip_prefix("unix://") {
            Target::Unix(PathBuf::from(p))
        } else {
            return Err(Invalid::new(
                "syslog.target",
                format!(
                    "{:?}: use udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH",
                    self.target
                ),
            ));
        };
        if let Target::Udp(a) | Target::Tcp(a) = &t
            && a.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(Invalid::new(
                "syslog.target",
                format!("{:?}: HOST:PORT expected", self.target),
            ));
        }
        let facility = match self.facility.as_str() {
            "kern" => 0,
            "user" => 1,
            "daemon" => 3,
            "auth" => 4,
            "syslog" => 5,
            "authpriv" => 10,
            f => match f.strip_prefix("local").and_then(|n| n.parse::<u8>().ok()) {
                Some(n) if n <= 7 => 16 + n,
                _ => {
                    return Err(Invalid::new(
                        "syslog.facility",
                        format!(
                            "{f:?}: kern, user, daemon, auth, authpriv, syslog or local0 .. local7"
                        ),
                    ));
                }
            },
        };
        let printable = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
        };
        if !printable(&self.app_name, 48) {
            return Err(Invalid::new(
                "syslog.app_name",
                "must be 1 to 48 printable ASCII characters",
            ));
        }
        if !printable(&self.sd_id, 32) || self.sd_id.contains(['=', ']', '"', ' ']) {
            return Err(Invalid::new(
                "syslog.sd_id",
                "must be 1 to 32 printable ASCII characters without = ] \" or space",
            ));
        }
        Ok(Some((t, facility)))
    }
}

#[derive(Debug, Default)]
pub struct SyslogStats {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
}

/// The sender thread and its queue.
pub struct Syslog {
    worker: Worker<Vec<u8>>,
    stats: Arc<SyslogStats>,
    facility: u8,
    app: String,
    host: String,
    sd_id: String,
}

impl Syslog {
    /// Starts the sender, or `None` when no target is configured.
    pub fn start(cfg: &SyslogConfig) -> Result<Option<Self>, SinkError> {
        let Some((target, facility)) = cfg.parse()? else {
            return Ok(None);
        };
        let stats = Arc::new(SyslogStats::default());
        let st = Arc::clone(&stats);
        let worker = Worker::spawn(
            "syslog",
            cfg.queue,
            move |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
                let mut conn = Conn {
                    target,
                    udp: None,
                    tcp: None,
                    unix: None,
                    logged: None,
                };
                for msg in rx {
                    conn.send(&msg, &st);
                }
            },
        )
        .map_err(|e| SinkError::Start(format!("starting the syslog sender: {e}")))?;
        Ok(Some(Self {
            worker,
            stats,
            facility,
            app: cfg.app_name.clone(),
            host: cfg.hostname.clone().unwrap_or_else(super::eve::host_name),
            sd_id: cfg.sd_id.clone(),
        }))
    }

    pub fn stats(&self) -> &Arc<SyslogStats> {
        &self.stats
    }

    /// Queues the message of `a`; never blocks. Dropping the sender sends what is queued.
    pub fn send(&self, a: &AlertRecord) {
        let msg = message(a, self.facility, &self.host, &self.app, &self.sd_id);
        if !self.worker.try_send(msg.into_bytes()) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl OutputConfig for SyslogConfig {
    fn check(&self) -> Result<(), Invalid> {
        self.parse().map(|_| ())
    }

    fn build(&self, metrics: &Registry) -> Result<Option<Box<dyn Output>>, SinkError> {
        let Some(s) = Syslog::start(self)? else {
            return Ok(None);
        };
        metrics.counters_of(
            &s.stats,
            &[
                (
                    "sensor_syslog_sent_total",
                    "Alerts sent to the syslog collector.",
                    |s| s.sent.load(Ordering::Relaxed),
                ),
                (
                    "sensor_syslog_dropped_total",
                    "Alerts not sent: queue full or the collector failed.",
                    |s| s.dropped.load(Ordering::Relaxed),
                ),
                ("sensor_syslog_errors_total", "Syslog send failures.", |s| {
                    s.errors.load(Ordering::Relaxed)
                }),
            ],
        );
        Ok(Some(Box::new(s)))
    }
}

impl Output for Syslog {
    fn sink(&self, live: bool) -> Box<dyn Sink + '_> {
        Box::new(AlertSink {
            out: self,
            at_close: !live,
        })
    }
}

impl super::AlertOutput for Syslog {
    fn send(&self, a: &AlertRecord) {
        Syslog::send(self, a);
    }
}

/// The collector side of the thread: sockets opened on first use, TCP reopened after a failure.
struct Conn {
    target: Target,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
    unix: Option<UnixDatagram>,
    logged: Option<Instant>,
}

impl Conn {
    fn send(&mut self, msg: &[u8], st: &SyslogStats) {
        let r = self.try_send(msg);
        match r {
            Ok(()) => {
                st.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // The next message reconnects.
                self.tcp = None;
                st.errors.fetch_add(1, Ordering::Relaxed);
                st.dropped.fetch_add(1, Ordering::Relaxed);
                if self
                    .logged
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    self.logged = Some(Instant::now());
                    tracing::warn!(target = ?self.target, error = %Report(&e),
                        "syslog delivery failed (further failures are counted in sensor_syslog_errors_total); alert kept in the database");
                }
            }
        }
    }

    fn try_send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        match &self.target {
            Target::Udp(addr) => {
                if self.udp.is_none() {
                    let to = addr
                        .to_socket_addrs()?
                        .next()
                        .ok_or_else(|| std::io::Error::other("no address"))?;
                    let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                    let s = UdpSocket::bind(bind)?;
                    s.connect(to)?;
                    self.udp = Some(s);
                }
                self.udp
                    .as_ref()
                    .map_or(Ok(()), |s| s.send(msg).map(|_| ()))
            }
            Target::Tcp(addr) => {
                if self.tcp.is_none() {
                    let to = addr
                        .to_socket_addrs()?
                        .next()
                        .ok_or_else(|| std::io::Error::other("no address"))?;
                    let s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
                    s.set_write_timeout(Some(Duration::from_secs(5)))?;
                    self.tcp = Some(s);
                }
                // RFC 6587 octet counting: the length, a space, the message.
                let mut framed = format!("{} ", msg.len()).into_bytes();
                framed.extend_from_slice(msg);
                match &mut self.tcp {
                    Some(s) => s.write_all(&framed),
                    None => Ok(()),
                }
            }
            Target::Unix(path) => {
                if self.unix.is_none() {
                    self.unix = Some(UnixDatagram::unbound()?);
                }
                self.unix
                    .as_ref()
                    .map_or(Ok(()), |s| s.send_to(msg, path).map(|_| ()))
            }
        }
    }
}

/// Syslog severity of an alert's.
fn severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Normal => 6,
    }
}

/// An SD-PARAM value with `"`, `\` and `]` escaped (RFC 5424, 6.3.3).
fn sd_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The RFC 5424 message of one alert.
pub fn message(a: &AlertRecord, facility: u8, host: &str, app: &str, sd_id: &str) -> String {
    let pri = u16::from(facility) * 8 + u16::from(severity(a.severity));
    let ip = |i: Option<std::net::IpAddr>| i.map_or_else(|| "many".to_owned(), |i| i.to_string());
    let (src, dst) = (ip(a.src_ip), ip(a.dst_ip));
    let host: String = host
        .bytes()
        .filter(|b| (33..=126).contains(b))
        .take(255)
        .map(char::from)
        .collect();
    let mut sd = format!(
        "[{sd_id} id=\"{}\" kind=\"{}\" severity=\"{}\" detector=\"{}\" src=\"{}\" dst=\"{}\" count=\"{}\"",
        a.id,
        a.kind.as_str(),
        a.severity.as_str(),
        a.detector.as_str(),
        sd_value(&src),
        sd_value(&dst),
        a.count
    );
    if let Some(p) = &a.pcap {
        sd.push_str(&format!(" pcap=\"{}\"", sd_value(p)));
    }
    sd.push(']');
    // The sentence last: what an operator reads in a SIEM's message column.
    let said: String = a.summary.chars().filter(|c| !c.is_control()).collect();
    format!(
        "<{pri}>1 {} {} {app} {} {} {sd} {} alert: {src} -> {dst} ({} severity, first seen {}){}",
        a.first_seen,
        if host.is_empty() { "-" } else { &host },
        std::process::id(),
        a.kind.as_str(),
        a.kind.as_str(),
        a.severity.as_str(),
        a.first_seen,
        if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        },
    )
}
