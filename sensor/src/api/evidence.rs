//! `GET /api/alerts/{id}/pcap` (bearer token): an alert's packet evidence file, for tshark or
//! Wireshark. The name comes from the alert's stored record and is checked against the one
//! form evidence files have before anything on disk is touched; the file is streamed.

use axum::{
    body::Body,
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use tokio_util::io::ReaderStream;

use super::{ApiError, Shared, read};
use crate::{evidence::is_file_name, sink::store::read as q};

pub(super) async fn pcap(
    State(st): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 =
        id.parse().ok().filter(|i| *i > 0).ok_or_else(|| {
            ApiError::BadRequest("the alert id must be a positive integer".into())
        })?;
    let name = read(&st, move |c| Ok(q::alert_pcap(c, id)?))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no alert {id}")))?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "alert {id} has no packet evidence (it names no single address, evidence was \
                 off, or too many alerts were being recorded at once)"
            ))
        })?;
    let gone = || {
        ApiError::NotFound(format!(
            "alert {id}: its evidence file is gone (deleted to stay under evidence.total_bytes) \
             or never received a packet"
        ))
    };
    if !is_file_name(&name) {
        tracing::warn!(
            id,
            "an alert record names an evidence file of a foreign form"
        );
        return Err(gone());
    }
    let path = st.data_dir.join("evidence").join(&name);
    // A regular file only: a link planted in the directory is not followed.
    let meta = tokio::fs::symlink_metadata(&path)
        .await
        .map_err(|_| gone())?;
    if !meta.is_file() {
        return Err(gone());
    }
    let file = tokio::fs::File::open(&path).await.map_err(|_| gone())?;
    let mut resp = Body::from_stream(ReaderStream::new(file)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.tcpdump.pcap"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
