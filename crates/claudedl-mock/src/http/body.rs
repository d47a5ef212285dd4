//! Streaming bodies: sent in chunks, optionally paced, every chunk counted, and ended as an
//! [`Ending`] says: normally, by aborting the connection right after the bytes sent so far, or
//! by a stall.
//!
//! A cut delivers exactly the bytes sent before it: the connection is aborted only once they
//! reached the socket (see [`Flushes`]). Every wait gives up, aborting the connection, when the
//! server shuts down.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::serve::Flushes;

/// Default body write granularity.
pub(crate) const DEFAULT_CHUNK_SIZE: usize = 16 * 1024;
/// How long a stalled body stays silent before the connection is aborted.
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// What happens once a body's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The body ends normally.
    Complete,
    /// The connection is aborted.
    Abort,
    /// Nothing more is sent for [`STALL_LIMIT`] (120 s), then the connection is aborted.
    Stall,
}

/// Where the bytes of a body come from.
pub(crate) trait ChunkSource: Send + 'static {
    /// How many bytes are left.
    fn remaining(&self) -> u64;

    /// Removes and returns the next `len` bytes (`len` is at most [`ChunkSource::remaining`]).
    fn take(&mut self, len: usize) -> Bytes;
}

impl ChunkSource for Bytes {
    fn remaining(&self) -> u64 {
        self.len() as u64
    }

    fn take(&mut self, len: usize) -> Bytes {
        self.split_to(len)
    }
}

/// Streams one body: in chunks of at most `chunk_size` bytes, paced by an optional [`Pacer`],
/// each chunk reported to `count` as it is handed to the connection, and ended as its
/// [`Ending`] says. Aborts the connection when `shutdown` turns `true`.
pub(crate) struct BodySender<S, C> {
    source: S,
    ending: Ending,
    chunk_size: usize,
    pacer: Option<Pacer>,
    count: C,
    shutdown: watch::Receiver<bool>,
    flushes: Flushes,
    finished: bool,
}

impl<S, C> BodySender<S, C>
where
    S: ChunkSource,
    C: Fn(usize) + Send + 'static,
{
    /// Sends `source` then ends as `ending` says, in chunks of [`DEFAULT_CHUNK_SIZE`], unpaced.
    pub(crate) fn new(
        source: S,
        ending: Ending,
        count: C,
        shutdown: watch::Receiver<bool>,
        flushes: Flushes,
    ) -> Self {
        BodySender {
            source,
            ending,
            chunk_size: DEFAULT_CHUNK_SIZE,
            pacer: None,
            count,
            shutdown,
            flushes,
            finished: false,
        }
    }

    /// Sets the largest chunk handed to the connection at once (at least 1).
    pub(crate) fn with_chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size.max(1);
        self
    }

    /// Paces the body, if `pacer` is given.
    pub(crate) fn with_pacer(mut self, pacer: Option<Pacer>) -> Self {
        self.pacer = pacer;
        self
    }

    pub(crate) fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(self, |mut sender| async move {
            let item = sender.next_item().await?;
            Some((item, sender))
        })
    }

    /// The next chunk; an error aborts the connection; `None` ends the body.
    async fn next_item(&mut self) -> Option<io::Result<Bytes>> {
        if self.finished {
            return None;
        }
        if self.source.remaining() == 0 {
            self.finished = true;
            return self.finish().await.err().map(Err);
        }
        let chunk = self.next_chunk().await;
        self.finished = chunk.is_err();
        Some(chunk)
    }

    async fn next_chunk(&mut self) -> io::Result<Bytes> {
        // The minimum is at most `chunk_size`, a `usize`.
        let mut len = self.source.remaining().min(self.chunk_size as u64) as usize;
        if let Some(pacer) = &mut self.pacer {
            len = len.min(until_shutdown(&mut self.shutdown, pacer.allowance()).await?);
            pacer.consume(len);
        }
        let chunk = self.source.take(len);
        (self.count)(chunk.len());
        Ok(chunk)
    }

    async fn finish(&mut self) -> io::Result<()> {
        match self.ending {
            Ending::Complete => Ok(()),
            Ending::Abort => {
                // hyper drops what it still buffers when a body fails: let the sent bytes reach
                // the socket first, so the client sees exactly them before the connection drops.
                until_shutdown(&mut self.shutdown, self.flushes.next()).await?;
                Err(aborted("injected fault: connection cut"))
            }
            Ending::Stall => {
                until_shutdown(&mut self.shutdown, tokio::time::sleep(STALL_LIMIT)).await?;
                Err(aborted("injected fault: stalled connection given up"))
            }
        }
    }
}

/// Runs `work` unless the server shuts down first.
async fn until_shutdown<T>(
    shutdown: &mut watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> io::Result<T> {
    tokio::select! {
        output = work => Ok(output),
        _ = shutdown.wait_for(|down| *down) => Err(aborted("server shut down")),
    }
}

fn aborted(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, reason)
}

/// Paces a body: at most `bytes` per window of `every`.
#[derive(Debug)]
pub(crate) struct Pacer {
    bytes_per_window: usize,
    every: Duration,
    budget: usize,
    refill_at: Instant,
}

impl Pacer {
    /// At most `bytes` (a value of 0 is treated as 1) per `every`, starting now.
    pub(crate) fn new(bytes: usize, every: Duration) -> Self {
        let bytes_per_window = bytes.max(1);
        Pacer {
            bytes_per_window,
            every,
            budget: bytes_per_window,
            refill_at: Instant::now() + every,
        }
    }

    /// How many bytes may be sent now, waiting for the next window if the budget is spent.
    async fn allowance(&mut self) -> usize {
        if self.budget == 0 {
            tokio::time::sleep_until(self.refill_at).await;
            self.budget = self.bytes_per_window;
            self.refill_at = Instant::now() + self.every;
        }
        self.budget
    }

    fn consume(&mut self, bytes: usize) {
        self.budget -= bytes;
    }
}
