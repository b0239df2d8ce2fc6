//! Optional webhook: each new alert is POSTed as JSON to a configured URL from a thread of its
//! own, with retries and exponential backoff. Detection hands alerts over a bounded queue and
//! never waits: when the receiver is down long enough for the queue to fill, further alerts are
//! counted as dropped (they stay in the database and the API).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{AlertSink, Output, OutputConfig, Sink, SinkError, worker::Worker};
use crate::report::Report;
use crate::{check::Invalid, metrics::Registry, record::AlertRecord};

/// `[webhook]` in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST alerts; no webhook when empty.
    pub url: String,
    /// Attempts per alert (the first one included).
    pub attempts: u32,
    /// Delay before the first retry; doubles up to `max_backoff_ms`.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub timeout_ms: u64,
    /// Alerts waiting to be sent at most.
    pub queue: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            attempts: 5,
            backoff_ms: 500,
            max_backoff_ms: 30_000,
            timeout_ms: 5_000,
            queue: 10_000,
        }
    }
}

#[derive(Debug, Default)]
pub struct WebhookStats {
    pub sent: AtomicU64,
    pub retries: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Webhook {
    worker: Worker<AlertRecord>,
    stats: Arc<WebhookStats>,
}

impl Webhook {
    /// Starts the sender, or `None` when no URL is configured.
    pub fn start(cfg: &WebhookConfig) -> Option<Self> {
        if cfg.url.is_empty() {
            return None;
        }
        let stats = Arc::new(WebhookStats::default());
        let st = Arc::clone(&stats);
        let cfg = cfg.clone();
        let worker = Worker::spawn("webhook", cfg.queue, move |rx| {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_millis(cfg.timeout_ms)))
                .http_status_as_error(true)
                .build()
                .into();
            for alert in rx {
                deliver(&agent, &cfg, &alert, &st);
            }
        })
        .ok()?;
        Some(Self { worker, stats })
    }

    pub fn stats(&self) -> &Arc<WebhookStats> {
        &self.stats
    }

    /// Queues an alert; never blocks. Dropping the webhook sends what is queued (with its
    /// retries) first.
    pub fn send(&self, a: &AlertRecord) {
        if !self.worker.try_send(a.clone()) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl OutputConfig for WebhookConfig {
    fn check(&self) -> Result<(), Invalid> {
        Ok(())
    }

    fn build(&self, metrics: &Registry) -> Result<Option<Box<dyn Output>>, SinkError> {
        let Some(w) = Webhook::start(self) else {
            return Ok(None);
        };
        metrics.counters_of(
            &w.stats,
            &[
                (
                    "sensor_webhook_sent_total",
                    "Alerts the webhook delivered.",
                    |s| s.sent.load(Ordering::Relaxed),
                ),
                (
                    "sensor_webhook_retries_total",
                    "Webhook delivery retries.",
                    |s| s.retries.load(Ordering::Relaxed),
                ),
                (
                    "sensor_webhook_failed_total",
                    "Alerts the webhook gave up on after every attempt.",
                    |s| s.failed.load(Ordering::Relaxed),
                ),
                (
                    "sensor_webhook_dropped_total",
                    "Alerts the full webhook queue refused.",
                    |s| s.dropped.load(Ordering::Relaxed),
                ),
            ],
        );
        Ok(Some(Box::new(w)))
    }
}

impl Output for Webhook {
    /// At open on both paths: a webhook is for acting on an attack while it runs.
    fn sink(&self, _live: bool) -> Box<dyn Sink + '_> {
        Box::new(AlertSink {
            out: self,
            at_close: false,
        })
    }
}

impl super::AlertOutput for Webhook {
    fn send(&self, a: &AlertRecord) {
        Webhook::send(self, a);
    }
}

fn deliver(agent: &ureq::Agent, cfg: &WebhookConfig, alert: &AlertRecord, st: &WebhookStats) {
    let body = serde_json::to_string(alert).unwrap_or_default();
    let mut backoff = cfg.backoff_ms;
    for attempt in 1..=cfg.attempts.max(1) {
        match agent
            .post(&cfg.url)
            .header("Content-Type", "application/json")
            .send(body.as_str())
        {
            Ok(_) => {
                st.sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                if attempt == cfg.attempts.max(1) {
                    tracing::warn!(url = %cfg.url, error = %Report(&e), "webhook delivery failed; alert kept in the database");
                    st.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                st.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(backoff));
                backoff = (backoff * 2).min(cfg.max_backoff_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Read as _, Write as _},
        net::TcpListener,
    };

    use super::*;
    use crate::detect::{
        Severity,
        alert::{AlertKind, DetectorKind},
    };

    fn alert() -> AlertRecord {
        AlertRecord {
            id: 7,
            state: crate::record::AlertState::Closed,
            merged_into: None,
            kind: AlertKind::PortScan,
            severity: Severity::High,
            detector: DetectorKind::Rule,
            src_ip: Some("10.0.0.1".parse().expect("ip")),
            dst_ip: None,
            first_seen: "2026-01-01T00:00:00.000000Z".into(),
            last_seen: "2026-01-01T00:00:01.000000Z".into(),
            count: 3,
            score: None,
            summary: String::new(),
            evidence: serde_json::json!({"ports": 25}),
            rate_history: Vec::new(),
            pcap: None,
            direction: None,
            hostgroup: None,
            remote: None,
        }
    }

    /// A receiver that fails the first two requests with 503, then accepts; returns bodies.
    fn flaky_receiver() -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        let h = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for (i, conn) in l.incoming().take(3).enumerate() {
                let mut c = conn.expect("conn");
                let mut r = BufReader::new(c.try_clone().expect("clone"));
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).expect("header");
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().expect("length");
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).expect("body");
                bodies.push(String::from_utf8(body).expect("utf8"));
                let status = if i < 2 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .expect("reply");
            }
            bodies
        });
        (url, h)
    }

    #[test]
    fn retries_with_backoff_until_delivered() {
        let (url, receiver) = flaky_receiver();
        let cfg = WebhookConfig {
            url,
            backoff_ms: 10,
            ..WebhookConfig::default()
        };
        let hook = Webhook::start(&cfg).expect("configured");
        hook.send(&alert());
        let stats = Arc::clone(hook.stats());
        drop(hook); // waits for the delivery and its retries
        let bodies = receiver.join().expect("receiver");
        assert_eq!(bodies.len(), 3);
        let v: serde_json::Value = serde_json::from_str(&bodies[2]).expect("json");
        assert_eq!(
            (v["kind"].as_str(), v["count"].as_u64()),
            (Some("port_scan"), Some(3))
        );
        assert_eq!(
            (
                stats.sent.load(Ordering::Relaxed),
                stats.retries.load(Ordering::Relaxed)
            ),
            (1, 2)
        );
    }

    #[test]
    fn an_unreachable_receiver_fails_without_blocking_the_sender() {
        // A port nothing listens on (bound, then released).
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let cfg = WebhookConfig {
            url: format!("http://127.0.0.1:{port}/"),
            attempts: 2,
            backoff_ms: 1,
            queue: 1,
            ..WebhookConfig::default()
        };
        let hook = Webhook::start(&cfg).expect("configured");
        for _ in 0..50 {
            hook.send(&alert()); // returns at once even though nothing is delivered
        }
        let stats = Arc::clone(hook.stats());
        drop(hook);
        let (failed, dropped) = (
            stats.failed.load(Ordering::Relaxed),
            stats.dropped.load(Ordering::Relaxed),
        );
        assert!(
            failed >= 1 && failed + dropped == 50,
            "failed {failed}, dropped {dropped}"
        );
        assert!(
            WebhookConfig::default().url.is_empty()
                && Webhook::start(&WebhookConfig::default()).is_none()
        );
    }
}
