use super::pages::Loop;
use crate::http::request_id::request_id_note;
use crate::http::{HttpError, retry};

/// A failed API call. Messages carry the error type, the request-id and a hint; never the key.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "no API key: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) or [auth] api_key_env / api_key in the config file (or run `claudedl demo` to try claudedl against a bundled mock API)"
    )]
    MissingKey,
    #[error("invalid base URL {0:?}: it must be an http(s) URL such as https://api.anthropic.com")]
    BadBaseUrl(String),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{error_type} (HTTP {status}) from {url}: {message}{}{}", request_id_note(.request_id), hint_note(*.status))]
    Api {
        status: u16,
        error_type: String,
        message: String,
        request_id: Option<String>,
        url: String,
    },
    #[error("unexpected response from {url}{}: {source}", request_id_note(.request_id))]
    Decode {
        url: String,
        request_id: Option<String>,
        #[source]
        source: serde_json::Error,
    },
    #[error("interrupted")]
    Cancelled,
    #[error(
        "stopped listing {url} after {requests} requests: the last page {reason}{}; the server's \
         pagination loops",
        request_id_note(.request_id)
    )]
    ListingLoop {
        url: String,
        requests: u64,
        request_id: Option<String>,
        reason: Loop,
    },
    #[error("refusing to request {what}: {reason}")]
    BadId { what: &'static str, reason: String },
    #[error("giving up on {url} after {attempts} failed attempts in a row: {last}")]
    RetriesExhausted {
        url: String,
        attempts: u32,
        last: Box<ApiError>,
    },
}

impl ApiError {
    /// The server said it is overloaded (503, 529): retried longer, with longer waits.
    pub fn is_overload(&self) -> bool {
        matches!(self, ApiError::Api { status, .. } if retry::is_overload(*status))
    }
}

fn hint_note(status: u16) -> &'static str {
    match status {
        401 => "; check ANTHROPIC_API_KEY",
        403 => "; the key lacks permission for this resource",
        404 => "; it does not exist or has expired",
        _ => "",
    }
}
