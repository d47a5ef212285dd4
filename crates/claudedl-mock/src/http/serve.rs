//! Running a test server: a loopback listener whose connections report their flushes, a router
//! served on it until a shutdown switch turns `true`, and the helpers of the request logs.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::http::HeaderMap;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Binds `127.0.0.1:port` (`0`: any free port); returns the listener and its address.
pub(crate) async fn bind_loopback(port: u16) -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves `app` on `listener` in a new task until `shutdown` turns `true` (then it stops
/// accepting). Handlers get the connection's [`Flushes`] as `ConnectInfo`.
pub(crate) fn spawn_server(
    listener: TcpListener,
    app: Router,
    shutdown: &watch::Sender<bool>,
) -> JoinHandle<()> {
    let app = app.into_make_service_with_connect_info::<Flushes>();
    let mut shutdown = shutdown.subscribe();
    let signal = async move {
        let _ = shutdown.wait_for(|down| *down).await;
    };
    tokio::spawn(async move {
        let _ = axum::serve(FlushTrackingListener(listener), app)
            .with_graceful_shutdown(signal)
            .await;
    })
}

/// Request headers as a request log keeps them: names lowercase, values lossily decoded as
/// UTF-8, in order.
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// The first value of header `name` (case-insensitive) among `headers`.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Accepts loopback connections wrapped in [`FlushTrackingStream`].
struct FlushTrackingListener(TcpListener);

impl Listener for FlushTrackingListener {
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
pub(crate) struct Flushes(Arc<watch::Sender<()>>);

impl Flushes {
    /// Completes at the first flush after the call.
    pub(crate) async fn next(&self) {
        // The sender lives in `self`, so `changed` cannot fail.
        let _ = self.0.subscribe().changed().await;
    }

    fn notify(&self) {
        self.0.send_replace(());
    }
}

impl Connected<IncomingStream<'_, FlushTrackingListener>> for Flushes {
    fn connect_info(stream: IncomingStream<'_, FlushTrackingListener>) -> Self {
        stream.io().flushes.clone()
    }
}

/// A TCP connection that reports its flushes.
struct FlushTrackingStream {
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
