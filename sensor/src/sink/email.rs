//! Email alerts (the old tool's wish list): SMTP to a configured relay, STARTTLS required by
//! default, as a rate-limited digest per alert kind.
//!
//! The first alert of a kind is mailed at once; alerts of that kind within the next
//! `interval_s` wait and go together in one digest when it is over, so a scan storm is a mail
//! every few minutes, not a mail per alert. Alerts below `min_severity` or of kinds not listed
//! are not mailed. Mail goes from a thread of its own through a bounded queue: detection never
//! waits for a relay; a full queue counts the alert dropped, a failing relay is logged once a
//! minute and counted. The password is read from a file, never from the config itself.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use lettre::{
    Message, SmtpTransport, Transport as _,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use serde::{Deserialize, Serialize};

use super::{AlertSink, Output, OutputConfig, Sink, SinkError, worker::Worker};
use crate::{
    check::Invalid,
    metrics::Registry,
    record::{AlertKind, AlertRecord, Severity},
};

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailTls {
    /// STARTTLS, required (submission port 587): a relay that does not offer it gets no mail.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text: only to a relay on this host.
    None,
}

/// `[email]` in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// `HOST:PORT` of the relay; no email when empty.
    pub relay: String,
    pub tls: EmailTls,
    /// PEM file of a private CA the relay's certificate chains to (default: the system's
    /// roots).
    pub tls_ca: Option<PathBuf>,
    /// SMTP AUTH user; none when empty.
    pub username: String,
    /// File holding the SMTP AUTH password.
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    /// Per kind: one mail at most every this many seconds; alerts in between go in the next.
    pub interval_s: u64,
    pub min_severity: Severity,
    /// Kinds mailed (empty: every kind).
    pub kinds: Vec<AlertKind>,
    /// Alerts waiting for the sender at most.
    pub queue: usize,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            relay: String::new(),
            tls: EmailTls::Starttls,
            tls_ca: None,
            username: String::new(),
            password_file: None,
            from: "sensor@localhost".into(),
            to: Vec::new(),
            interval_s: 300,
            min_severity: Severity::High,
            kinds: Vec::new(),
            queue: 1000,
        }
    }
}

/// Alerts listed in one digest at most (the rest are counted).
const LISTED: usize = 100;

impl EmailConfig {
    /// (host, port) of the relay, or `None` when off; the message names the bad key.
    fn relay(&self) -> Result<Option<(String, u16)>, Invalid> {
        if self.relay.is_empty() {
            return Ok(None);
        }
        let Some((host, port)) = self
            .relay
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
        else {
            return Err(Invalid::new(
                "email.relay",
                format!("{:?}: HOST:PORT expected", self.relay),
            ));
        };
        if self.to.is_empty() {
            return Err(Invalid::new(
                "email.to",
                "needs at least one recipient with email.relay",
            ));
        }
        for a in self.to.iter().chain(std::iter::once(&self.from)) {
            a.parse::<Mailbox>().map_err(|e| {
                Invalid::new(
                    if a == &self.from {
                        "email.from"
                    } else {
                        "email.to"
                    },
                    format!("{a:?} is not an address: {e}"),
                )
            })?;
        }
        let local = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|i| i.is_loopback());
        if self.tls == EmailTls::None && !local {
            return Err(Invalid::new(
                "email.tls",
                format!(
                    "\"none\" sends the alerts and the password in clear: only to a relay on \
                     this host, not {host}"
                ),
            ));
        }
        if self.interval_s == 0 {
            return Err(Invalid::new("email.interval_s", "must be positive"));
        }
        if self.queue == 0 {
            return Err(Invalid::new("email.queue", "must be positive"));
        }
        Ok(Some((host.to_owned(), port)))
    }
}

#[derive(Debug, Default)]
pub struct EmailStats {
    /// Mails the relay accepted, and the alerts in them.
    pub mails: AtomicU64,
    pub alerts: AtomicU64,
    /// Alerts not mailed: queue full or the relay failed.
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
}

/// The sender thread and its queue.
pub struct Email {
    worker: Worker<AlertRecord>,
    stats: Arc<EmailStats>,
    min: Severity,
    kinds: Vec<AlertKind>,
}

impl Email {
    /// Starts the sender, or `None` when no relay is configured. A bad config, an unreadable
    /// password or CA file is an error here, before anything runs.
    pub fn start(cfg: &EmailConfig) -> Result<Option<Self>, SinkError> {
        let Some((host, port)) = cfg.relay()? else {
            return Ok(None);
        };
        let transport = transport(cfg, &host, port).map_err(SinkError::Start)?;
        let mailer = Mailer {
            from: cfg
                .from
                .parse()
                .map_err(|e| Invalid::new("email.from", format!("{e}")))?,
            to: cfg
                .to
                .iter()
                .map(|t| {
                    t.parse()
                        .map_err(|e| Invalid::new("email.to", format!("{e}")))
                })
                .collect::<Result<_, Invalid>>()?,
            host: super::eve::host_name(),
            transport,
        };
        let stats = Arc::new(EmailStats::default());
        let st = Arc::clone(&stats);
        let interval = Duration::from_secs(cfg.interval_s);
        let worker = Worker::spawn("email", cfg.queue, move |rx| {
            digest_loop(&rx, &mailer, interval, &st);
        })
        .map_err(|e| SinkError::Start(format!("starting the email sender: {e}")))?;
        Ok(Some(Self {
            worker,
            stats,
            min: cfg.min_severity,
            kinds: cfg.kinds.clone(),
        }))
    }

    pub fn stats(&self) -> &Arc<EmailStats> {
        &self.stats
    }

    /// Queues an alert that passes the filters; never blocks. Dropping the sender mails what
    /// waits (every pending digest at once).
    pub fn send(&self, a: &AlertRecord) {
        if a.severity < self.min || !(self.kinds.is_empty() || self.kinds.contains(&a.kind)) {
            return;
        }
        if !self.worker.try_send(a.clone()) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl OutputConfig for EmailConfig {
    fn check(&self) -> Result<(), Invalid> {
        self.relay().map(|_| ())
    }

    fn build(&self, metrics: &Registry) -> Result<Option<Box<dyn Output>>, SinkError> {
        let Some(e) = Email::start(self)? else {
            return Ok(None);
        };
        metrics.counters_of(
            &e.stats,
            &[
                (
                    "sensor_email_mails_total",
                    "Alert mails the relay accepted.",
                    |s| s.mails.load(Ordering::Relaxed),
                ),
                ("sensor_email_alerts_total", "Alerts in those mails.", |s| {
                    s.alerts.load(Ordering::Relaxed)
                }),
                (
                    "sensor_email_dropped_total",
                    "Alerts not mailed: queue full or the relay failed.",
                    |s| s.dropped.load(Ordering::Relaxed),
                ),
                (
                    "sensor_email_errors_total",
                    "Failed mail deliveries.",
                    |s| s.errors.load(Ordering::Relaxed),
                ),
            ],
        );
        Ok(Some(Box::new(e)))
    }
}

impl Output for Email {
    fn sink(&self, live: bool) -> Box<dyn Sink + '_> {
        Box::new(AlertSink {
            out: self,
            at_close: !live,
        })
    }
}

impl super::AlertOutput for Email {
    fn send(&self, a: &AlertRecord) {
        Email::send(self, a);
    }
}

fn transport(cfg: &EmailConfig, host: &str, port: u16) -> Result<SmtpTransport, String> {
    let params = || -> Result<TlsParameters, String> {
        let mut b = TlsParameters::builder(host.to_owned());
        if let Some(ca) = &cfg.tls_ca {
            let pem =
                std::fs::read(ca).map_err(|e| format!("email.tls_ca {}: {e}", ca.display()))?;
            b = b.add_root_certificate(
                Certificate::from_pem(&pem)
                    .map_err(|e| format!("email.tls_ca {}: {e}", ca.display()))?,
            );
        }
        b.build_rustls()
            .map_err(|e| format!("email TLS for {host}: {e}"))
    };
    let tls = match cfg.tls {
        EmailTls::Starttls => Tls::Required(params()?),
        EmailTls::Tls => Tls::Wrapper(params()?),
        EmailTls::None => Tls::None,
    };
    let mut b = SmtpTransport::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(20)));
    if !cfg.username.is_empty() {
        let password = match &cfg.password_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("email.password_file {}: {e}", p.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            None => return Err("email.username needs email.password_file".into()),
        };
        b = b.credentials(Credentials::new(cfg.username.clone(), password));
    }
    Ok(b.build())
}

struct Mailer {
    from: Mailbox,
    to: Vec<Mailbox>,
    host: String,
    transport: SmtpTransport,
}

/// Alerts of one kind waiting for their digest.
#[derive(Default)]
struct Pending {
    alerts: Vec<AlertRecord>,
    /// Beyond the ones listed.
    more: u64,
    last_sent: Option<Instant>,
}

fn digest_loop(rx: &mpsc::Receiver<AlertRecord>, m: &Mailer, interval: Duration, st: &EmailStats) {
    let mut kinds: BTreeMap<AlertKind, Pending> = BTreeMap::new();
    let mut logged: Option<Instant> = None;
    let mut open = true;
    while open {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(a) => {
                let p = kinds.entry(a.kind).or_default();
                if p.alerts.len() < LISTED {
                    p.alerts.push(a);
                } else {
                    p.more += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
        for (kind, p) in &mut kinds {
            let due = !open || p.last_sent.is_none_or(|t| t.elapsed() >= interval);
            if p.alerts.is_empty() || !due {
                continue;
            }
            let alerts = std::mem::take(&mut p.alerts);
            let n = alerts.len() as u64 + std::mem::take(&mut p.more);
            p.last_sent = Some(Instant::now());
            match m.send(*kind, &alerts, n) {
                Ok(()) => {
                    st.mails.fetch_add(1, Ordering::Relaxed);
                    st.alerts.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    st.errors.fetch_add(1, Ordering::Relaxed);
                    st.dropped.fetch_add(n, Ordering::Relaxed);
                    if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        logged = Some(Instant::now());
                        tracing::warn!(error = %e,
                            "mailing alerts failed (further failures are counted in sensor_email_errors_total); alerts kept in the database");
                    }
                }
            }
        }
    }
}

impl Mailer {
    fn send(&self, kind: AlertKind, alerts: &[AlertRecord], n: u64) -> Result<(), String> {
        let worst = alerts
            .iter()
            .map(|a| a.severity)
            .max()
            .unwrap_or(Severity::Low);
        let subject = format!(
            "[sensor {}] {n} {} alert{} (worst: {})",
            self.host,
            kind.as_str(),
            if n == 1 { "" } else { "s" },
            worst.as_str()
        );
        let ip = |i: Option<IpAddr>| i.map_or_else(|| "many".to_owned(), |i| i.to_string());
        let mut body = format!(
            "{n} {} alert(s) on {} since the last mail of this kind:\n\n",
            kind.as_str(),
            self.host
        );
        for a in alerts {
            body.push_str(&format!(
                "- #{} {} {} -> {}, {} severity, first seen {}, last seen {}, fired {} time(s){}\n",
                a.id,
                a.kind.as_str(),
                ip(a.src_ip),
                ip(a.dst_ip),
                a.severity.as_str(),
                a.first_seen,
                a.last_seen,
                a.count,
                a.pcap
                    .as_ref()
                    .map(|p| format!(", packets in {p}"))
                    .unwrap_or_default()
            ));
        }
        if n > alerts.len() as u64 {
            body.push_str(&format!(
                "- and {} more (see the dashboard or /api/alerts)\n",
                n - alerts.len() as u64
            ));
        }
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            b = b.to(t.clone());
        }
        let msg = b.body(body).map_err(|e| e.to_string())?;
        self.transport
            .send(&msg)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
