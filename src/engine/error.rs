use std::path::PathBuf;

use crate::http::request_id::request_id_note;
use crate::http::{HttpError, retry};

/// Why a transfer failed. Every variant names the (redacted) URL or the path involved.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Crypt(#[from] crate::crypt::CryptError),
    #[error("{url} answered HTTP {status}{}{}", request_id_note(.request_id), hint(*.status))]
    Status {
        url: String,
        status: u16,
        request_id: Option<String>,
    },
    #[error(
        "giving up on {url} (bytes {range}) after {attempts} failed attempts in a row{}. Last error: {last}",
        kept_note(*.kept, "rerun to resume")
    )]
    RetriesExhausted {
        url: String,
        range: String,
        attempts: u32,
        last: Box<TransferError>,
        /// Whether written bytes were kept for a rerun (set by [`TransferError::with_kept`]).
        kept: bool,
    },
    #[error("{url}: connection closed after {received} of {expected} bytes")]
    ShortBody {
        url: String,
        received: u64,
        expected: u64,
    },
    #[error("{url}: the server misbehaved ({reason})")]
    Protocol { url: String, reason: String },
    #[error("{url}: expected {expected} bytes, have {actual}{}", kept_note(*.kept, "rerun to resume"))]
    LengthMismatch {
        url: String,
        expected: u64,
        actual: u64,
        /// Whether written bytes were kept for a rerun (set by [`TransferError::with_kept`]).
        kept: bool,
    },
    #[error("another claudedl is downloading {}", output.display())]
    Busy { output: PathBuf },
    #[error("refusing to write through the symbolic link {}", path.display())]
    Link { path: PathBuf },
    #[error("{url} changed on the server {restarts} times during the download; try again later")]
    KeepsChanging { url: String, restarts: u32 },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted; progress saved in {}, rerun the same command to resume", state.display())]
    Cancelled { state: PathBuf },
}

impl TransferError {
    /// The server said it is overloaded (503, 529): retried longer, with longer waits.
    pub fn is_overload(&self) -> bool {
        matches!(self, TransferError::Status { status, .. } if retry::is_overload(*status))
    }

    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> TransferError {
        let path = path.into();
        move |source| TransferError::Io {
            action,
            path,
            source,
        }
    }

    /// Say (in the message) whether the partial download was kept.
    pub fn with_kept(mut self, now_kept: bool) -> TransferError {
        if let TransferError::RetriesExhausted { kept, .. }
        | TransferError::LengthMismatch { kept, .. } = &mut self
        {
            *kept = now_kept;
        }
        self
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self, TransferError::Cancelled { .. })
    }
}

fn kept_note(kept: bool, then: &str) -> String {
    if kept {
        format!("; the partial download is kept, {then}")
    } else {
        String::new()
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => ": check the credentials sent with -H or ANTHROPIC_API_KEY",
        403 => ": access denied",
        404 | 410 => ": not found (wrong URL, or the file expired)",
        _ => "",
    }
}
