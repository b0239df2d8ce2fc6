//! Server-sent events: alerts as they are written, new ones and updates of running incidents
//! alike (polled every second, in write order), and statistics every 5 s.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};

use super::{Shared, read};
use crate::sink::store::read::{self as q, Filter};

#[utoipa::path(
    get,
    path = "/api/events",
    tag = "read",
    description = "Server-sent events: `alert` (every write of an alert, in write order) and `stats` every 5 s. The stream does not end.",
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
    )
)]
pub(super) async fn events(
    State(st): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    // Where the stream starts is read before the response goes out: every alert stored after
    // the client has its 200 is pushed (read later, an alert stored in between was skipped).
    let last_rev: i64 = read(&st, |c| Ok(q::max_alert_rev(c)?)).await.unwrap_or(0);
    Sse::new(stream(st, last_rev)).keep_alive(KeepAlive::default())
}

fn stream(
    st: Shared,
    mut last_rev: i64,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tick += 1;
            let since = last_rev;
            let new = read(&st, move |c| Ok(q::alerts_after(c, since, 500)?))
                .await
                .unwrap_or_default();
            for (rev, v) in new {
                last_rev = rev;
                if tx
                    .send(Event::default().event("alert").data(v.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if tick.is_multiple_of(5) {
                let f = Filter {
                    limit: 60,
                    ..Filter::default()
                };
                if let Ok(v) = read(&st, move |c| Ok(q::stats(c, &f)?)).await
                    && tx
                        .send(Event::default().event("stats").data(v.to_string()))
                        .await
                        .is_err()
                {
                    return;
                }
            }
        }
    });
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}
