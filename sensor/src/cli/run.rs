//! `sensor run`: the live sensor (see [`crate::agent`]).

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use super::{CaptureKind, DbArgs, XdpMode, api_token, stop_on_signals};
use crate::{
    agent::AgentOptions, config::Config, detect::ml::model::Model, kernel::KernelConfig,
    source::attached::CaptureMode,
};

pub(super) struct RunArgs {
    pub ifaces: Vec<String>,
    pub capture: CaptureKind,
    pub xdp_mode: XdpMode,
    pub force: bool,
    pub poll_ms: u64,
    pub kernel: KernelConfig,
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub model: Option<PathBuf>,
    pub online_model: Option<PathBuf>,
    pub listen: std::net::SocketAddr,
    pub token: Option<String>,
    pub db: DbArgs,
}

pub(super) fn run(a: RunArgs) -> anyhow::Result<()> {
    // A mistyped interface is refused before anything is created (data directory, token).
    if let Some(missing) = a
        .ifaces
        .iter()
        .find(|i| !crate::kernel::attach::iface_exists(i))
    {
        return Err(crate::kernel::attach::AttachError::NoInterface(missing.clone()).into());
    }
    // Before any thread starts, so that all of them run with the reduced sets.
    let dropped = crate::privileges::keep_only(&crate::privileges::needed(a.listen.port() < 1024))?;
    if !dropped.is_empty() {
        tracing::info!(
            dropped = dropped.len(),
            "capabilities lowered to what the live sensor uses"
        );
    }
    let model = a.model.as_deref().map(Model::load).transpose()?;
    let online = a
        .online_model
        .as_deref()
        .map(crate::detect::ml::online::OnlineModel::load)
        .transpose()?;
    let token = api_token(&a.db, a.token)?;
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(Arc::clone(&stop))?;
    let mode = match (a.capture, a.xdp_mode) {
        (CaptureKind::Pcap, _) => CaptureMode::Pcap,
        (CaptureKind::Xdp, XdpMode::Auto) => CaptureMode::Auto,
        (CaptureKind::Xdp, XdpMode::Driver) => CaptureMode::Driver,
        (CaptureKind::Xdp, XdpMode::Skb) => CaptureMode::Skb,
    };
    let opts = AgentOptions {
        ifaces: a.ifaces,
        mode,
        force: a.force,
        kernel: a.kernel,
        poll: Duration::from_millis(a.poll_ms.max(10)),
        config: a.config,
        config_path: a.config_path,
        model,
        online,
        model_path: a.model,
        db: a.db.path(),
        data_dir: a.db.data_dir.clone(),
        listen: a.listen,
        token,
    };
    crate::agent::run(opts, stop)?;
    Ok(())
}
