//! Streaming bodies that can be cut after exactly N bytes or stalled, counted per route.
//!
//! This is the machinery of [`crate::origin`] (flush-tracked connections, so an aborted body
//! delivers exactly the bytes sent before the cut), repeated here because that module keeps it
//! private. Bodies come from a [`BodySource`], so generated content is produced chunk by chunk
//! and never held in memory whole.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::files::generated_bytes;
use super::{Route, Shared};

/// Body write granularity.
const CHUNK_SIZE: usize = 16 * 1024;
/// How long a stalled body stays silent before the connection is aborted.
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// Where the bytes of a body come from.
#[derive(Debug, Clone)]
pub(super) enum BodySource {
    Bytes(Bytes),
    /// Bytes `range` of generated content with this key (see [`generated_bytes`]).
    Generated {
        key: u64,
        range: Range<u64>,
    },
}

impl BodySource {
    pub(super) fn len(&self) -> u64 {
        match self {
            BodySource::Bytes(bytes) => bytes.len() as u64,
            BodySource::Generated { range, .. } => range.end - range.start,
        }
    }

    /// The sub-range `range` (relative to this source).
    pub(super) fn slice(&self, range: Range<u64>) -> BodySource {
        match self {
            BodySource::Bytes(bytes) => {
                BodySource::Bytes(bytes.slice(to_usize(range.start)..to_usize(range.end)))
            }
            BodySource::Generated { key, range: own } => BodySource::Generated {
                key: *key,
                range: own.start + range.start..own.start + range.end,
            },
        }
    }

    /// Keeps at most the first `limit` bytes.
    fn truncate(&mut self, limit: u64) {
        let len = self.len().min(limit);
        *self = self.slice(0..len);
    }

    /// Removes and returns up to `max` bytes from the front.
    fn take(&mut self, max: usize) -> Bytes {
        let len = self.len().min(max as u64);
        match self {
            BodySource::Bytes(bytes) => bytes.split_to(to_usize(len)),
            BodySource::Generated { key, range } => {
                let chunk = generated_bytes(*key, range.start, to_usize(len));
                range.start += len;
                chunk
            }
        }
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// What happens once a body's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// The body ends normally.
    Complete,
    /// The connection is aborted.
    Abort,
    /// Nothing more is sent for [`STALL_LIMIT`], then the connection is aborted.
    Stall,
}

/// A successful body: its bytes, the route they are counted for, and how it ends.
#[derive(Debug, Clone)]
pub(super) struct CountedBody {
    pub(super) source: BodySource,
    pub(super) route: Route,
    pub(super) ending: Ending,
}

impl CountedBody {
    pub(super) fn complete(source: BodySource, route: Route) -> Self {
        CountedBody {
            source,
            route,
            ending: Ending::Complete,
        }
    }

    /// Sends only the first `limit` bytes, then ends as `ending` says.
    pub(super) fn cut(&mut self, limit: u64, ending: Ending) {
        self.source.truncate(limit);
        self.ending = ending;
    }

    pub(super) fn into_stream(
        self,
        shared: &Arc<Shared>,
        flushes: Flushes,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let sender = BodySender {
            body: self,
            shared: Arc::clone(shared),
            shutdown: shared.shutdown.subscribe(),
            flushes,
            finished: false,
        };
        futures_util::stream::unfold(sender, |mut sender| async move {
            let item = sender.next_item().await?;
            Some((item, sender))
        })
    }
}

/// Streams one body in chunks, counted, ended as its [`Ending`] says; aborts the connection when
/// the API is dropped.
struct BodySender {
    body: CountedBody,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    flushes: Flushes,
    finished: bool,
}

impl BodySender {
    /// The next chunk; an error aborts the connection; `None` ends the body.
    async fn next_item(&mut self) -> Option<io::Result<Bytes>> {
        if self.finished {
            return None;
        }
        if self.body.source.len() == 0 {
            self.finished = true;
            return self.finish().await.err().map(Err);
        }
        let chunk = self.body.source.take(CHUNK_SIZE);
        self.shared.count_sent(self.body.route, chunk.len());
        Some(Ok(chunk))
    }

    async fn finish(&mut self) -> io::Result<()> {
        match self.body.ending {
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

/// Runs `work` unless the API is dropped first.
async fn until_shutdown<T>(
    shutdown: &mut watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> io::Result<T> {
    tokio::select! {
        output = work => Ok(output),
        _ = shutdown.wait_for(|down| *down) => Err(aborted("mock API shut down")),
    }
}

fn aborted(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, reason)
}

/// Accepts loopback connections wrapped in [`FlushTrackingStream`].
pub(super) struct ApiListener(pub(super) TcpListener);

impl Listener for ApiListener {
    type Io = FlushTrackingStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own implementation retries failed accepts.
        let (stream, peer) = Listener::accept(&mut self.0).await;
        let stream = FlushTrackingStream {
            stream,
            flushes: Flushes::default(),
        };
        (stream, peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Tells when a connection is flushed. hyper flushes the socket only once its write buffer is
/// empty, so a flush that follows a body chunk means the chunk reached the socket.
#[derive(Debug, Clone, Default)]
pub(super) struct Flushes(Arc<watch::Sender<()>>);

impl Flushes {
    /// Completes at the first flush after the call.
    async fn next(&self) {
        // The sender lives in `self`, so `changed` cannot fail.
        let _ = self.0.subscribe().changed().await;
    }

    fn notify(&self) {
        self.0.send_replace(());
    }
}

impl Connected<IncomingStream<'_, ApiListener>> for Flushes {
    fn connect_info(stream: IncomingStream<'_, ApiListener>) -> Self {
        stream.io().flushes.clone()
    }
}

/// A TCP connection that reports its flushes.
pub(super) struct FlushTrackingStream {
    stream: TcpStream,
    flushes: Flushes,
}

impl AsyncRead for FlushTrackingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlushTrackingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        if flushed.is_ready() {
            this.flushes.notify();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
