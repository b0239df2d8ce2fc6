//! `GET /api/alerts/{id}/pcap` (bearer token): an alert's packet evidence file, for tshark or
//! Wireshark. The name comes from the alert's stored record and is checked against the one
//! form evidence files have before anything on disk is touched; the file is streamed.

use axum::{
    body::Body,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use tokio_util::io::ReaderStream;

use super::{ApiError, Shared, extract::ApiPath, read, schema::ErrorBody};
use crate::{evidence::is_file_name, sink::store::read as q};

#[utoipa::path(
    get,
    path = "/api/alerts/{id}/pcap",
    tag = "control",
    description = "The alert's packet evidence (pcap), for tshark or Wireshark.",
    params(("id" = i64, Path, description = "The alert's row id", minimum = 1, example = 1)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The pcap file", content_type = "application/vnd.tcpdump.pcap", body = Vec<u8>),
        (status = 400, description = "The request is not valid", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such interface, file or entry", body = ErrorBody),
        (status = 503, description = "The live loop or the database is not available now", body = ErrorBody),
    )
)]
pub(super) async fn pcap(
    State(st): State<Shared>,
    ApiPath(id): ApiPath<String>,
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
