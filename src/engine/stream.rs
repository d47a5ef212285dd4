//! Streaming one response body into the `.part` at its segment's offsets, through a bounded
//! buffer: memory stays constant whatever the file size.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::Response;
use tokio_util::sync::CancellationToken;

use super::ledger::Ledger;
use super::plan::Segment;
use super::response::Failure;
use super::writer::PartWriter;
use super::{Reporter, TransferError};
use crate::http::{Governor, HttpError};

/// Bytes gathered before one positional write.
const WRITE_BUFFER: usize = 512 * 1024;
/// The most one read of a body yields (hyper's largest read buffer, 8 KiB + 100 × 4 KiB).
const READ_MAX: usize = 8192 + 4096 * 100;
/// On slow links, write what arrived at least this often, so checkpoints keep up.
const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// Where a body's bytes go and who hears about them.
pub struct Sink<'a> {
    pub part: &'a PartWriter,
    pub ledger: &'a Ledger,
    pub reporter: &'a Arc<dyn Reporter>,
    pub id: usize,
    pub url: &'a str,
    pub read_timeout: Duration,
    /// Bytes written by this run (for the summary).
    pub fetched: &'a AtomicU64,
    /// Stops the copy (after writing what was received).
    pub cancel: &'a CancellationToken,
    /// The resume state, named in the error when cancelled.
    pub state: &'a Path,
    /// Holds reading to the bandwidth cap.
    pub governor: &'a Governor,
}

/// Copy `response`'s body into `segment` until the segment ends or the body does.
///
/// `body_len` is what the response announced (`None` when unknown). A body that ends early is a
/// retryable failure (the segment's cursor already sits after the last byte written, so the
/// retry continues from there); a body longer than announced is fatal for ranged mode.
pub async fn copy_body(
    mut response: Response,
    segment: &Segment,
    body_len: Option<u64>,
    sink: &Sink<'_>,
) -> Result<(), Failure> {
    let mut buffer = BytesMut::with_capacity(WRITE_BUFFER);
    let mut received = 0u64;
    let mut flushed_at = Instant::now();
    loop {
        let next = tokio::select! {
            biased;
            () = sink.cancel.cancelled() => None,
            next = next_chunk(&mut response, sink) => Some(next),
        };
        let Some(next) = next else {
            flush(&mut buffer, segment, sink).await?;
            return Err(Failure::Fatal(TransferError::Cancelled {
                state: sink.state.to_path_buf(),
            }));
        };
        let chunk = match next {
            Ok(chunk) => chunk,
            Err(error) => {
                flush(&mut buffer, segment, sink).await?;
                return Err(Failure::Retry {
                    error: error.into(),
                    server_wait: None,
                });
            }
        };
        let Some(chunk) = chunk else {
            flush(&mut buffer, segment, sink).await?;
            return match body_len {
                Some(expected) if received < expected && !segment_done(segment) => {
                    let error = TransferError::ShortBody {
                        url: sink.url.to_owned(),
                        received,
                        expected,
                    };
                    Err(Failure::Retry {
                        error,
                        server_wait: None,
                    })
                }
                _ => Ok(()),
            };
        };
        received += chunk.len() as u64;
        sink.governor.received(chunk.len() as u64).await;
        if body_len.is_some_and(|expected| received > expected) {
            return Err(Failure::Untrustworthy(
                "the body is longer than announced".into(),
            ));
        }
        if buffer.is_empty() && buffer.capacity() < WRITE_BUFFER + READ_MAX {
            // Room for a whole write: the buffer never grows (by doubling from 64 KiB, copying
            // what it holds each time). Once written, the old one is taken back if it is free.
            buffer.reserve(WRITE_BUFFER + READ_MAX);
        }
        buffer.extend_from_slice(&chunk);
        let due = buffer.len() >= WRITE_BUFFER || flushed_at.elapsed() >= FLUSH_AFTER;
        if !due {
            continue;
        }
        flushed_at = Instant::now();
        if flush(&mut buffer, segment, sink).await? {
            // The segment is complete. A bounded response must end here too: read on to
            // confirm it (and to hand the connection back to the pool); an open one is dropped.
            if body_len == Some(received) {
                continue;
            }
            return Ok(());
        }
    }
}

fn segment_done(segment: &Segment) -> bool {
    let left = segment.remaining();
    left.start >= left.end
}

async fn next_chunk(response: &mut Response, sink: &Sink<'_>) -> Result<Option<Bytes>, HttpError> {
    match tokio::time::timeout(sink.read_timeout, response.chunk()).await {
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(source)) => Err(HttpError::Body {
            url: sink.url.to_owned(),
            source,
        }),
        Err(_) => Err(HttpError::Stalled {
            url: sink.url.to_owned(),
            idle: sink.read_timeout,
        }),
    }
}

/// Write the buffer at the segment's cursor; returns whether the segment is now complete.
async fn flush(buffer: &mut BytesMut, segment: &Segment, sink: &Sink<'_>) -> Result<bool, Failure> {
    if buffer.is_empty() {
        return Ok(segment_done(segment));
    }
    let (at, granted) = segment.claim(buffer.len() as u64);
    let data = buffer.split().freeze().slice(..granted as usize);
    if granted > 0 {
        sink.ledger.room_for(at + granted).await;
        let part = sink.part.clone();
        let written = tokio::task::spawn_blocking(move || part.write_at(data, at))
            .await
            .map_err(std::io::Error::other)
            .and_then(|result| result);
        let written = written
            .map_err(|e| Failure::Fatal(TransferError::io("writing", sink.part.path())(e)))?;
        for written in written {
            sink.ledger.record(written);
        }
        sink.reporter.progress(sink.id, granted);
        sink.fetched.fetch_add(granted, Ordering::Relaxed);
    }
    Ok(segment_done(segment))
}
