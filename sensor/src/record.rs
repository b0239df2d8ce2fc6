//! The JSON form of a finished flow (`--flows-jsonl`, and later the API and the database).

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

use crate::flow::{EndReason, Flow};

/// One finished flow, as written one per line by `--flows-jsonl`.
#[derive(Debug, Serialize)]
pub struct FlowRecord {
    pub src_ip: String,
    pub dst_ip: String,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number (0 for ARP, whose `family` is "arp").
    pub proto: u8,
    pub family: &'static str,
    pub packets_fwd: u64,
    pub packets_rev: u64,
    pub bytes_fwd: u64,
    pub bytes_rev: u64,
    /// RFC 3339, microseconds, UTC.
    pub first_seen: String,
    pub last_seen: String,
    pub duration_s: f64,
    pub syn: u64,
    pub syn_ack: u64,
    pub fin: u64,
    pub rst: u64,
    pub psh: u64,
    pub ack_only: u64,
    pub echo_requests: u64,
    pub fragments: u64,
    pub min_len: u32,
    pub max_len: u32,
    pub mean_len: f64,
    pub std_len: f64,
    /// Inter-arrival time statistics in µs (null when the source had no per-packet times).
    pub mean_iat_us: Option<f64>,
    pub std_iat_us: Option<f64>,
    pub end: EndReason,
}

/// RFC 3339 with microseconds in UTC for ns since the epoch.
pub fn rfc3339_us(ns: u64) -> String {
    DateTime::from_timestamp_nanos(ns.min(i64::MAX as u64) as i64)
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl From<&Flow> for FlowRecord {
    fn from(f: &Flow) -> Self {
        let iat = (f.iat_us.n > 0).then_some(f.iat_us);
        Self {
            src_ip: f.src.to_string(),
            dst_ip: f.dst.to_string(),
            src_port: f.src_port,
            dst_port: f.dst_port,
            proto: f.proto,
            family: match f.family {
                sensor_common::family::IPV6 => "ipv6",
                sensor_common::family::ARP => "arp",
                _ => "ipv4",
            },
            packets_fwd: f.fwd.packets,
            packets_rev: f.rev.packets,
            bytes_fwd: f.fwd.bytes,
            bytes_rev: f.rev.bytes,
            first_seen: rfc3339_us(f.first_seen_ns),
            last_seen: rfc3339_us(f.last_seen_ns),
            duration_s: f.duration().as_secs_f64(),
            syn: u64::from(f.syn),
            syn_ack: u64::from(f.syn_ack),
            fin: u64::from(f.fin),
            rst: u64::from(f.rst),
            psh: u64::from(f.psh),
            ack_only: u64::from(f.ack_only),
            echo_requests: u64::from(f.echo_requests),
            fragments: u64::from(f.fragments),
            min_len: if f.packets() == 0 { 0 } else { f.min_len },
            max_len: f.max_len,
            mean_len: f.len.mean,
            std_len: f.len.std(),
            mean_iat_us: iat.map(|m| m.mean),
            std_iat_us: iat.map(|m| m.std()),
            end: f.end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        assert_eq!(
            rfc3339_us(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
    }
}
