//! `-o -`: one download streamed to standard output, and `-i -`: URLs read from standard
//! input.
//!
//! A pipe cannot be resumed nor written out of order, so the download is one stream (no
//! ranges, no `.part`, no resume state): a failure mid-way ends the run, and what the reader
//! got is a prefix of the content. The reader's pace paces the download.

use std::io::Read;
use std::path::Path;

use claudedl::engine::TransferError;
use claudedl::http::redact::redact_url;
use claudedl::http::request_id::request_id;
use claudedl::http::{HttpClient, HttpError};
use reqwest::header::HeaderMap;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use url::Url;

/// The name that means standard input or output.
pub const STDIO: &str = "-";

/// Whether `path` is `-`.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == STDIO
}

/// Standard input, whole (the URL list of `-i -`).
pub fn read_stdin() -> std::io::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    Ok(text)
}

/// Stream `url` to standard output; the number of bytes written.
pub async fn to_stdout(
    client: &HttpClient,
    url: &Url,
    headers: &HeaderMap,
    cancel: &CancellationToken,
) -> Result<u64, TransferError> {
    let shown = redact_url(url);
    let mut response = client.get(url, headers).await?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(TransferError::Status {
            url: shown,
            status,
            request_id: request_id(response.headers()),
        });
    }
    let expected = response.content_length();
    let stdout_path = Path::new("<stdout>");
    let mut stdout = tokio::io::stdout();
    let mut written = 0u64;
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk,
            () = cancel.cancelled() => {
                return Err(TransferError::Cancelled { state: stdout_path.to_path_buf() });
            }
        };
        let chunk = chunk.map_err(|source| HttpError::Body {
            url: shown.clone(),
            source,
        })?;
        let Some(chunk) = chunk else { break };
        stdout
            .write_all(&chunk)
            .await
            .map_err(TransferError::io("writing to", stdout_path))?;
        written += chunk.len() as u64;
    }
    if let Some(expected) = expected.filter(|len| *len != written) {
        return Err(TransferError::ShortBody {
            url: shown,
            received: written,
            expected,
        });
    }
    stdout
        .flush()
        .await
        .map_err(TransferError::io("writing to", stdout_path))?;
    Ok(written)
}
