//! Gateway network security sensor.
//!
//! The kernel half (`sensor-ebpf`) aggregates packets into per-5-tuple and per-host counters in
//! BPF maps; this crate loads it, reads those maps, and (with the modules that follow) turns
//! them into flows, detections, storage and an API.

pub mod agent;
pub mod api;
pub mod capture;
pub mod cli;
pub mod config;
pub mod detect;
pub mod flow;
pub mod flowmap;
pub mod kernel;
pub mod packet;
pub mod poller;
pub mod record;
pub mod replay;
pub mod store;
pub mod webhook;
