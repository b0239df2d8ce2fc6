//! `sensor serve`: the API and dashboard over a database, read-only (capture control answers
//! 409 and points to `sensor run`).

use std::sync::Arc;

use super::{DbArgs, api_token, shutdown_signal};
use crate::{api::ApiState, config::Config};

pub(super) fn run(
    db: &DbArgs,
    listen: std::net::SocketAddr,
    token: Option<String>,
    config: Config,
) -> anyhow::Result<()> {
    let path = db
        .path()
        .ok_or_else(|| anyhow::anyhow!("serve needs a database (drop --no-db)"))?;
    let token = api_token(db, token)?;
    let state = Arc::new(ApiState::read_only(path, db.data_dir.clone(), token).with_config(config));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = crate::api::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        eprintln!(
            "serve: dashboard and API on http://{}",
            listener.local_addr()?
        );
        crate::api::serve(listener, state, shutdown_signal()).await?;
        eprintln!("serve: stopped");
        Ok(())
    })
}
