//! A raw HTTP/1.1 client for the unit tests of the servers: it writes requests by hand and
//! reads responses off the wire until the server closes (or aborts) the connection, so tests
//! see exactly the bytes that were sent, cuts and stalls included.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::http::serve::find_header;

/// How long a test waits for anything that should happen.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A response as read off the wire, until the connection closed.
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    /// Names lowercase, in order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// Connects to `addr` and writes `{method} {target}` with `headers` and `connection: close`.
pub(crate) async fn connect_and_send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> TcpStream {
    let mut request = format!("{method} {target} HTTP/1.1\r\nhost: {addr}\r\n");
    for (name, value) in headers {
        write!(request, "{name}: {value}\r\n").unwrap();
    }
    request.push_str("connection: close\r\n\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Sends one request and reads until the server closes (or aborts) the connection.
pub(crate) async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut stream = connect_and_send(addr, method, target, headers).await;
    let raw = timeout(PATIENCE, read_until_closed(&mut stream))
        .await
        .unwrap();
    parse_response(&raw)
}

/// Everything until the server closes or aborts the connection.
pub(crate) async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0; 16 * 1024];
    while let Ok(read @ 1..) = stream.read(&mut buf).await {
        raw.extend_from_slice(&buf[..read]);
    }
    raw
}

/// Splits a complete response into status, headers and (undecoded) body.
pub(crate) fn parse_response(raw: &[u8]) -> RawResponse {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..head_end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    RawResponse {
        status: status.parse().unwrap(),
        headers,
        body: raw[head_end + 4..].to_vec(),
    }
}
