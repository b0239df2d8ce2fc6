//! `sensor::agent::run` on a thread of the test, with its API on 127.0.0.1 of the test's network
//! namespace; stopped (and its data directory removed) on drop.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    thread::JoinHandle,
    time::Duration,
};

use sensor::{
    agent::{AgentError, AgentOptions, run},
    config::Config,
    kernel::KernelConfig,
    source::attached::CaptureMode,
};
use serde_json::Value;

use crate::{http, netns::sh, try_http};

pub const TOKEN: &str = "live-test-token-0123456789";

/// A running agent on 127.0.0.1 (in the test's namespace); stopped on drop.
pub struct Agent {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64, AgentError>>>,
    pub dir: PathBuf,
}

impl Agent {
    pub fn start(name: &str, ifaces: Vec<String>, mode: CaptureMode) -> Self {
        Self::start_with(name, ifaces, mode, None)
    }

    /// With the online second model judging every flow event.
    pub fn start_with(
        name: &str,
        ifaces: Vec<String>,
        mode: CaptureMode,
        online: Option<sensor::detect::ml::online::OnlineModel>,
    ) -> Self {
        Self::start_config(name, ifaces, mode, online, Config::default())
    }

    /// With `config` (outputs, thresholds) instead of the defaults.
    pub fn start_config(
        name: &str,
        ifaces: Vec<String>,
        mode: CaptureMode,
        online: Option<sensor::detect::ml::online::OnlineModel>,
        config: Config,
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("sensor-live-{}-{name}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&dir);
        Self::start_in(dir, ifaces, mode, online, config)
    }

    /// With the config file `text`, written to `sensor.toml` in its data directory (rule
    /// changes from the API are written back to it).
    pub fn start_with_file(name: &str, ifaces: Vec<String>, mode: CaptureMode, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sensor-live-{}-{name}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let path = dir.join("sensor.toml");
        std::fs::write(&path, text).expect("write config");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("test config: {e}"));
        Self::start_full(dir, ifaces, mode, None, config, Some(path))
    }

    /// With its data directory at `dir` (a small or read-only file system, say); what it
    /// holds is removed on drop, `dir` itself may stay.
    pub fn start_in(
        dir: PathBuf,
        ifaces: Vec<String>,
        mode: CaptureMode,
        online: Option<sensor::detect::ml::online::OnlineModel>,
        config: Config,
    ) -> Self {
        Self::start_full(dir, ifaces, mode, online, config, None)
    }

    fn start_full(
        dir: PathBuf,
        ifaces: Vec<String>,
        mode: CaptureMode,
        online: Option<sensor::detect::ml::online::OnlineModel>,
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Self {
        // A free port inside the namespace (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let opts = AgentOptions {
            ifaces,
            mode,
            force: false,
            kernel: KernelConfig {
                flows: 65_536,
                hosts: 4096,
                coarse_time: false,
                cache_slots: sensor_common::DEFAULT_CACHE_SLOTS,
                ..KernelConfig::default()
            },
            poll: Duration::from_millis(100),
            config,
            config_path,
            model: None,
            online,
            model_path: None,
            db: Some(dir.join("sensor.db")),
            data_dir: dir.clone(),
            listen: ([127, 0, 0, 1], port).into(),
            token: TOKEN.into(),
        };
        let thread = {
            let stop = Arc::clone(&stop);
            // Spawned from the test thread, the agent's threads live in the test's namespace.
            std::thread::spawn(move || run(opts, stop))
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut agent = Self {
            addr,
            stop,
            thread: Some(thread),
            dir,
        };
        for _ in 0..100 {
            if try_http(addr, "GET", "/api/status", None, None).is_ok() {
                return agent;
            }
            if agent.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "agent API did not come up; agent returned {:?}",
            agent.join().map_err(|e| e.to_string())
        );
    }

    /// Stops the agent and returns its result (alerts raised).
    pub fn join(&mut self) -> Result<u64, AgentError> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("agent thread panicked"))
            .unwrap_or(Ok(0))
    }

    /// A request with the token and a JSON body: (status, JSON answer).
    pub fn send(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (code, text) = http(self.addr, method, path, Some(TOKEN), body);
        (
            code,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")),
        )
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (code, text) = http(self.addr, "POST", path, Some(TOKEN), Some(body));
        (
            code,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ignored = self.join();
        }
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the kernel shows an XDP program on `iface`.
pub fn xdp_on(iface: &str) -> bool {
    sh(&["ip", "-d", "link", "show", "dev", iface]).contains("prog/xdp")
}
