//! Gateway network security sensor.
//!
//! The data path, in the order packets travel it:
//!
//! - [`packet`]: the userspace twin of the kernel's parser: frames to flow keys, shared by
//!   every path that reads packets and by the flow table.
//! - [`kernel`]: the XDP program and its maps: load, attach, the poller that drains the flow
//!   maps into the flow table, the evidence watch map.
//! - [`source`]: packets from libpcap on a live interface or a capture file
//!   ([`source::pcap`]); sources attached and detached at runtime ([`source::attached`]).
//! - [`flow`]: the bidirectional flow table every source feeds.
//! - [`detect`]: rules and the anomaly model on flow events and finished flows.
//! - [`pipeline`]: the one path from the table through detection to the outputs, shared by
//!   replay and both live sources.
//! - [`sink`]: outputs (SQLite store, JSONL, webhook, log) and [`record`], their contract.
//! - [`api`]: the HTTP API and dashboard over the store, with live controls in `sensor run`.
//! - [`mitigate`]: opt-in blocking and rate limiting at XDP, driven by alerts and the API.
//! - [`evidence`]: a pcap file of each alert's packets, copied in the kernel or re-read in replay.
//! - [`history`]: what the rules saw, kept on disk for dry runs of rule changes.
//!
//! [`ruleset`] is the rules as the editor changes them (checked, written back, described).
//! [`drive`] runs the pipeline (a replay, the live loop), [`agent`] wires a live sensor together
//! and stops it in order,
//! [`cli`] is the command line.

pub mod agent;
pub mod api;
pub mod check;
pub mod cli;
pub mod config;
pub mod detect;
pub mod drive;
pub mod evidence;
pub mod flow;
pub mod geo;
pub mod history;
pub mod kernel;
pub mod metrics;
pub mod mitigate;
pub mod networks;
pub mod packet;
pub mod pipeline;
pub mod privileges;
pub mod record;
pub mod report;
pub mod ruleset;
pub mod sink;
pub mod source;
