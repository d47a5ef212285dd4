//! Reading a small file's body whole into memory (it is at most `min_split` bytes): the
//! small-file path of `transfer` hands it to the group committer instead of a `.part`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Response;
use tokio_util::sync::CancellationToken;

use super::TransferError;
use super::response::Failure;
use crate::http::{Governor, HttpError};

/// What reading a body needs to know.
pub struct Reading<'a> {
    pub url: &'a str,
    pub read_timeout: Duration,
    pub cancel: &'a CancellationToken,
    pub governor: &'a Governor,
    /// Named in the error when cancelled.
    pub state: &'a std::path::Path,
}

/// The whole body of `response`, which announced `total` bytes. Cut short or stalled: a
/// retryable failure (nothing is kept: the retry fetches it whole again); longer than
/// announced: untrustworthy.
pub async fn read_whole(
    mut response: Response,
    total: u64,
    reading: &Reading<'_>,
) -> Result<Bytes, Failure> {
    // The chunks as they came (most bodies come in one: it is kept without a copy).
    let (mut chunks, mut received) = (Vec::new(), 0u64);
    loop {
        let next = tokio::select! {
            biased;
            () = reading.cancel.cancelled() => return Err(Failure::Fatal(TransferError::Cancelled {
                state: reading.state.to_path_buf(),
            })),
            next = tokio::time::timeout(reading.read_timeout, response.chunk()) => next,
        };
        let chunk = match next {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(source)) => {
                let error = HttpError::Body {
                    url: reading.url.to_owned(),
                    source,
                };
                return Err(retry(error.into()));
            }
            Err(_) => {
                let error = HttpError::Stalled {
                    url: reading.url.to_owned(),
                    idle: reading.read_timeout,
                };
                return Err(retry(error.into()));
            }
        };
        reading.governor.received(chunk.len() as u64).await;
        received += chunk.len() as u64;
        if received > total {
            return Err(Failure::Untrustworthy(
                "the body is longer than announced".into(),
            ));
        }
        chunks.push(chunk);
    }
    if received < total {
        return Err(retry(TransferError::ShortBody {
            url: reading.url.to_owned(),
            received,
            expected: total,
        }));
    }
    if chunks.len() == 1 {
        return Ok(chunks.swap_remove(0));
    }
    let mut body = BytesMut::with_capacity(total as usize);
    chunks
        .iter()
        .for_each(|chunk| body.extend_from_slice(chunk));
    Ok(body.freeze())
}

fn retry(error: TransferError) -> Failure {
    Failure::Retry {
        error,
        server_wait: None,
    }
}

/// SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
