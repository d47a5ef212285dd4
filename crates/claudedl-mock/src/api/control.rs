//! The control routes of [`super::MockApiConfig::with_stats_routes`], for benchmarks:
//!
//! - `GET /_mock/stats`: the [`MockStats`](super::MockStats) of the current window, as JSON;
//! - `POST /_mock/reset-stats`: closes the window (its stats are the answer) and starts a new one.
//!
//! They need no key, are never rate limited, and are neither logged nor counted as API requests.
//! A wrong method gets `405`; other `/_mock/...` paths are ordinary (unknown) API paths.

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;

use super::Shared;
use super::stats::MockStats;
use crate::http::lock;

const STATS: &str = "/_mock/stats";
const RESET_STATS: &str = "/_mock/reset-stats";

/// The response to a control route, or `None` for any other path.
pub(super) fn answer(parts: &Parts, shared: &Arc<Shared>) -> Option<Response> {
    let path = parts.uri.path();
    let expected = match path {
        STATS => Method::GET,
        RESET_STATS => Method::POST,
        _ => return None,
    };
    if parts.method != expected {
        return Some(respond(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{{\"error\":\"{path} takes {expected}\"}}").into_bytes(),
        ));
    }
    let sent = *shared.sent.borrow();
    let mut state = lock(&shared.state);
    let stats = if path == STATS {
        state.stats(sent)
    } else {
        state.reset_stats(sent)
    };
    drop(state);
    Some(respond(StatusCode::OK, to_json(&stats)))
}

fn to_json(stats: &MockStats) -> Vec<u8> {
    serde_json::to_vec(stats).expect("stats serialise")
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let json = header::HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    response
}
