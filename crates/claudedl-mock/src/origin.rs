//! An HTTP origin with named faults, for the integration tests and benchmarks of claudedl.
//!
//! [`Origin::start`] binds `127.0.0.1:0` and serves one resource (the configured content) on
//! every path. It implements the parts of HTTP that a resumable, parallel downloader relies on:
//! `GET` and `HEAD`, single byte ranges (`bytes=a-b`, `bytes=a-`, `bytes=-n`), `416` for
//! unsatisfiable ranges, `If-Range`, `ETag` and `Last-Modified`. On top of that it misbehaves in
//! the ways named by [`Fault`]: connections cut mid-body, stalls, rate limiting, servers that lie
//! about range support, short and long bodies, a resource that changes mid-download, redirects.
//!
//! Everything is observable: every request is logged (method, path, headers and the status chosen
//! for it) before its body is streamed, and every content body byte handed to the connection is
//! counted, so tests can assert exactly what the client did and wait for progress without sleeping.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures_util::Stream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::body::{BodySender, DEFAULT_CHUNK_SIZE, Ending, Pacer};
use crate::http::lock;
use crate::http::range::{self, ByteRange};
use crate::http::serve::{Flushes, bind_loopback, find_header, header_pairs, spawn_server};

/// Default `Last-Modified`: 2023-11-14T22:13:20Z.
const DEFAULT_LAST_MODIFIED_SECS: u64 = 1_700_000_000;
/// How many bytes a [`Fault::LongBody`] response sends beyond the requested range.
const LONG_BODY_EXTRA: usize = 100;
/// Padding used by [`Fault::LongBody`] when the range ends too close to the end of the content.
const FILLER_BYTE: u8 = 0xAA;
/// How far [`Fault::ChangeAfter`] moves `Last-Modified` forward.
const ONE_DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What an [`Origin`] serves and how it misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// The representation served on every path.
    pub content: Bytes,
    /// Strong `ETag`; [`OriginConfig::new`] sets `"v1-{len}"`.
    pub etag: Option<String>,
    /// `Last-Modified`; [`OriginConfig::new`] sets a fixed instant (Unix time 1 700 000 000).
    pub last_modified: Option<SystemTime>,
    /// `true`: honour `Range` and send `Accept-Ranges: bytes`. `false`: always `200` with the
    /// full body and no `Accept-Ranges` header.
    pub accept_ranges: bool,
    /// The misbehaviour, if any.
    pub fault: Fault,
    /// Pacing of body bytes, per response.
    pub throttle: Option<Throttle>,
    /// Largest body chunk handed to the connection at once.
    pub chunk_size: usize,
}

impl OriginConfig {
    /// A well-behaved origin serving `content`, with both validators and range support.
    pub fn new(content: impl Into<Bytes>) -> Self {
        let content = content.into();
        Self {
            etag: Some(version_etag(1, content.len())),
            last_modified: Some(
                SystemTime::UNIX_EPOCH + Duration::from_secs(DEFAULT_LAST_MODIFIED_SECS),
            ),
            content,
            accept_ranges: true,
            fault: Fault::None,
            throttle: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// Sets the fault.
    #[must_use]
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Paces every response body.
    #[must_use]
    pub fn with_throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Sets the body write granularity (at least one byte is always written).
    #[must_use]
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size;
        self
    }

    /// Ignores `Range` and stops advertising `Accept-Ranges`.
    #[must_use]
    pub fn without_ranges(mut self) -> Self {
        self.accept_ranges = false;
        self
    }

    /// Sends no `ETag`.
    #[must_use]
    pub fn without_etag(mut self) -> Self {
        self.etag = None;
        self
    }

    /// Sends no `Last-Modified`.
    #[must_use]
    pub fn without_last_modified(mut self) -> Self {
        self.last_modified = None;
        self
    }
}

impl Default for OriginConfig {
    /// A well-behaved origin serving empty content.
    fn default() -> Self {
        Self::new(Bytes::new())
    }
}

/// Body pacing: each response sends at most `bytes` body bytes per `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Bytes allowed per window (a value of 0 is treated as 1).
    pub bytes: usize,
    /// Window length.
    pub every: Duration,
}

impl Throttle {
    /// At most `bytes` per second.
    pub fn per_second(bytes: usize) -> Self {
        Self {
            bytes,
            every: Duration::from_secs(1),
        }
    }
}

/// How a `429` response tells the client to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: N` (delay in seconds).
    Seconds(u64),
    /// `Retry-After: <HTTP date>`.
    HttpDate(SystemTime),
    /// `Retry-After-Ms: N` (delay in milliseconds, no `Retry-After`).
    Millis(u64),
}

/// A named misbehaviour of the origin.
///
/// Counters (`times`) count down under a lock, in request arrival order, so every run behaves
/// the same. Unless stated otherwise a fault applies to `GET` and `HEAD` alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fault {
    /// A well-behaved origin.
    #[default]
    None,
    /// The first `times` `GET` responses that carry a non-empty body (`200` or `206`) are cut
    /// (connection aborted) after `bytes` body bytes; the client receives exactly those bytes.
    /// A body no longer than `bytes` completes normally, but still uses up one of `times`.
    ResetAfter { bytes: u64, times: u32 },
    /// The first `times` `GET` responses that carry a non-empty body send `after_bytes` body bytes,
    /// then go silent with the connection open for at most 120 s (or until the origin is
    /// dropped), then abort the connection. A body no longer than `after_bytes` completes
    /// normally, but still uses up one of `times`.
    Stall { after_bytes: u64, times: u32 },
    /// The first `times` requests get `429 Too Many Requests` with the given delay and a small
    /// text body.
    TooManyRequests { retry_after: RetryAfter, times: u32 },
    /// The first `times` requests get this status (e.g. 503, 500, 408), a small text body and no
    /// `Retry-After`. Panics if `status` is not a valid status code.
    Status { status: u16, times: u32 },
    /// Range requests are answered `200` with the full body, although `Accept-Ranges: bytes` is
    /// still advertised (a lying server).
    IgnoreRange,
    /// Range requests get `206` and the right bytes, but `Content-Range` names `start + 1` as the
    /// first byte (the last byte and the total are right).
    WrongContentRange,
    /// The first `times` `206` responses to `GET` announce the full `Content-Length` of the range
    /// but send only half of it (rounded down), then the connection is aborted.
    ShortBody { times: u32 },
    /// The first `times` `206` responses to `GET` carry a correct `Content-Range` but no
    /// `Content-Length` (chunked), and a body 100 bytes longer than the range: the bytes after the
    /// range, padded with `0xAA` where the content ends.
    LongBody { times: u32 },
    /// Once `requests` requests have been answered, the content switches to `new_content`, the
    /// `ETag` (if any) to `"v2-{len}"` and `Last-Modified` (if any) moves one day forward. From
    /// then on `If-Range` with an old validator yields `200` with the full new body.
    ChangeAfter { requests: u32, new_content: Bytes },
    /// `206` responses carry `Content-Encoding: gzip` and a body that is the gzip compression of
    /// the requested bytes; `Content-Length` is the compressed length, `Content-Range` names the
    /// uncompressed bytes.
    GzipRange,
    /// Every request is answered `302 Found` with `Location: <location>` and no body.
    RedirectTo { location: String },
    /// The first `served` `GET` responses that carry a non-empty body complete; every later one
    /// is cut (connection aborted) after `bytes` body bytes (a server that dies after its first
    /// answer).
    ResetAfterServed { served: u32, bytes: u64 },
    /// Every `nth` `GET` response that carries a non-empty body (the `nth`, the `2·nth`, ...) is
    /// cut after `bytes` body bytes; the others complete (a flaky server).
    ResetEvery { nth: u32, bytes: u64 },
}

/// One request as the origin saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target: path and query string, if any.
    pub path: String,
    /// All request headers; names are lowercase, values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The status chosen for the response.
    pub status: u16,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A running origin on `127.0.0.1`; stops accepting, and aborts the bodies it is still
/// sending, when dropped.
#[derive(Debug)]
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Origin {
    /// Binds an ephemeral loopback port and starts serving `config`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(config: OriginConfig) -> Origin {
        let (listener, addr) = bind_loopback(0).await.expect("bind a loopback port");
        let shared = Arc::new(Shared::new(config));
        let app = Router::new()
            .fallback(serve_request)
            .with_state(Arc::clone(&shared));
        let server = spawn_server(listener, app, &shared.shutdown);
        Origin {
            addr,
            shared,
            server,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`; a missing leading `/` is added.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// How many requests arrived so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// How many requests carried a `Range` header.
    pub fn ranged_request_count(&self) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|request| request.header("range").is_some())
            .count()
    }

    /// Content body bytes (of `200` and `206` responses, as sent: compressed for
    /// [`Fault::GzipRange`], including the extra bytes of [`Fault::LongBody`]) handed to
    /// connections so far. Bodies of error responses are not counted.
    pub fn body_bytes_sent(&self) -> u64 {
        *self.shared.sent.borrow()
    }

    /// Resolves once [`Origin::body_bytes_sent`] reaches `n`.
    pub async fn wait_for_body_bytes(&self, n: u64) {
        let mut sent = self.shared.sent.subscribe();
        // The sender lives in `self.shared`, so this cannot fail while `self` is borrowed.
        let _ = sent.wait_for(|total| *total >= n).await;
    }

    /// The content currently served (the new one after a [`Fault::ChangeAfter`] switch).
    pub fn content(&self) -> Bytes {
        lock(&self.shared.state).resource.content.clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.server.abort();
    }
}

/// State shared by the [`Origin`] handle, the request handler and the body streams.
#[derive(Debug)]
struct Shared {
    state: Mutex<ServerState>,
    log: Mutex<Vec<RecordedRequest>>,
    sent: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    chunk_size: usize,
    throttle: Option<Throttle>,
}

impl Shared {
    fn new(config: OriginConfig) -> Self {
        let mut state = ServerState {
            resource: Resource {
                content: config.content,
                etag: config.etag,
                last_modified: config.last_modified,
            },
            accept_ranges: config.accept_ranges,
            fault: config.fault,
            answered: 0,
            bodies: 0,
        };
        state.apply_due_change();
        Self {
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
            sent: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            chunk_size: config.chunk_size.max(1),
            throttle: config.throttle,
        }
    }

    fn record(&self, parts: &Parts, status: StatusCode) {
        let request = RecordedRequest {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path(), |target| target.as_str())
                .to_owned(),
            headers: header_pairs(&parts.headers),
            status: status.as_u16(),
        };
        lock(&self.log).push(request);
    }

    fn count_sent(&self, bytes: usize) {
        self.sent.send_modify(|total| *total += bytes as u64);
    }
}

/// The one handler: sees every request, on every path, with every method.
async fn serve_request(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(flushes): ConnectInfo<Flushes>,
    request: Request,
) -> Response {
    let (parts, _body) = request.into_parts();
    let reply = {
        let mut state = lock(&shared.state);
        let reply = state.answer(&parts.method, &parts.headers);
        // Logged under the state lock, so the log order is the order decisions were made in.
        shared.record(&parts, reply.status);
        reply
    };
    reply.into_response(&shared, flushes)
}

/// The served representation.
#[derive(Debug, Clone)]
struct Resource {
    content: Bytes,
    etag: Option<String>,
    last_modified: Option<SystemTime>,
}

impl Resource {
    /// The representation after a [`Fault::ChangeAfter`] switch.
    fn next_version(&self, content: Bytes) -> Resource {
        Resource {
            etag: self.etag.as_ref().map(|_| version_etag(2, content.len())),
            last_modified: self.last_modified.map(|modified| modified + ONE_DAY),
            content,
        }
    }

    /// Whether an `If-Range` validator still names this representation: a strong, exact `ETag`
    /// match, or exactly the `Last-Modified` date.
    fn if_range_matches(&self, validator: &str) -> bool {
        range::if_range_matches(validator, self.etag.as_deref(), self.last_modified)
    }

    /// `ETag`, `Last-Modified` and `Content-Type`.
    fn describe(&self, reply: &mut Reply) {
        reply.set(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(etag) = &self.etag {
            reply.set(header::ETAG, etag);
        }
        if let Some(modified) = self.last_modified {
            reply.set(header::LAST_MODIFIED, httpdate::fmt_http_date(modified));
        }
    }
}

fn version_etag(version: u32, len: usize) -> String {
    format!("\"v{version}-{len}\"")
}

/// Mutable server state; every decision about a response is taken under its lock.
#[derive(Debug)]
struct ServerState {
    resource: Resource,
    accept_ranges: bool,
    fault: Fault,
    answered: u32,
    /// `GET` responses with a non-empty body so far.
    bodies: u32,
}

impl ServerState {
    fn answer(&mut self, method: &Method, headers: &HeaderMap) -> Reply {
        let reply = self.choose_reply(method, headers);
        self.answered += 1;
        self.apply_due_change();
        reply
    }

    /// Switches the content once a [`Fault::ChangeAfter`] is due (then the fault is spent).
    fn apply_due_change(&mut self) {
        if let Fault::ChangeAfter {
            requests,
            new_content,
        } = &self.fault
            && self.answered >= *requests
        {
            self.resource = self.resource.next_version(new_content.clone());
            self.fault = Fault::None;
        }
    }

    fn choose_reply(&mut self, method: &Method, headers: &HeaderMap) -> Reply {
        if let Some(reply) = self.status_fault() {
            return reply;
        }
        if method != Method::GET && method != Method::HEAD {
            return Reply::method_not_allowed();
        }
        let is_get = method == Method::GET;
        match self.requested_range(headers) {
            None => self.full_reply(is_get),
            Some(ByteRange::Unsatisfiable) => self.unsatisfiable_reply(),
            // Both bounds are at most the content length, a `usize`.
            Some(ByteRange::Satisfiable(range)) => {
                self.partial_reply(range.start as usize..range.end as usize, is_get)
            }
        }
    }

    /// Replies that replace the representation entirely: redirects, 429 and plain statuses.
    fn status_fault(&mut self) -> Option<Reply> {
        match &mut self.fault {
            Fault::RedirectTo { location } => Some(Reply::redirect(location)),
            Fault::TooManyRequests { retry_after, times } if *times > 0 => {
                *times -= 1;
                Some(Reply::too_many_requests(*retry_after))
            }
            Fault::Status { status, times } if *times > 0 => {
                *times -= 1;
                Some(Reply::plain_status(*status))
            }
            _ => None,
        }
    }

    /// The range to honour, if any: `None` means "send the full representation".
    fn requested_range(&self, headers: &HeaderMap) -> Option<ByteRange> {
        if !self.accept_ranges || self.fault == Fault::IgnoreRange {
            return None;
        }
        let len = self.resource.content.len() as u64;
        range::requested_range(headers, len, |validator| {
            self.resource.if_range_matches(validator)
        })
    }

    fn full_reply(&mut self, is_get: bool) -> Reply {
        let content = self.resource.content.clone();
        let mut reply = self.representation_reply(StatusCode::OK);
        reply.set(header::CONTENT_LENGTH, content.len());
        reply.body = self.content_body(content, is_get);
        reply
    }

    fn unsatisfiable_reply(&self) -> Reply {
        let mut reply = self.representation_reply(StatusCode::RANGE_NOT_SATISFIABLE);
        let total = self.resource.content.len();
        reply.set(header::CONTENT_RANGE, format!("bytes */{total}"));
        reply.set(header::CONTENT_LENGTH, 0);
        reply
    }

    fn partial_reply(&mut self, range: Range<usize>, is_get: bool) -> Reply {
        let content = self.resource.content.clone();
        let mut reply = self.representation_reply(StatusCode::PARTIAL_CONTENT);
        let shown_start = match self.fault {
            Fault::WrongContentRange => range.start + 1,
            _ => range.start,
        };
        let content_range = format!("bytes {shown_start}-{}/{}", range.end - 1, content.len());
        reply.set(header::CONTENT_RANGE, content_range);
        match &mut self.fault {
            Fault::GzipRange => {
                let compressed = gzip(&content[range]);
                reply.set(header::CONTENT_ENCODING, "gzip");
                reply.set(header::CONTENT_LENGTH, compressed.len());
                reply.body = self.content_body(compressed, is_get);
            }
            Fault::ShortBody { times } if is_get && *times > 0 => {
                *times -= 1;
                reply.set(header::CONTENT_LENGTH, range.len());
                let half = range.len() / 2;
                reply.body = ReplyBody::content(content.slice(range), half, Ending::Abort);
            }
            Fault::LongBody { times } if is_get && *times > 0 => {
                *times -= 1;
                let body = overlong(&content, range);
                reply.body = ReplyBody::content(body, usize::MAX, Ending::Complete);
            }
            _ => {
                reply.set(header::CONTENT_LENGTH, range.len());
                reply.body = self.content_body(content.slice(range), is_get);
            }
        }
        reply
    }

    /// A reply describing the current representation, without a body yet.
    fn representation_reply(&self, status: StatusCode) -> Reply {
        let mut reply = Reply::new(status);
        self.resource.describe(&mut reply);
        if self.accept_ranges {
            reply.set(header::ACCEPT_RANGES, "bytes");
        }
        reply
    }

    /// The body of a `200` or `206`, cut or stalled when a fault says so.
    fn content_body(&mut self, data: Bytes, is_get: bool) -> ReplyBody {
        if !is_get {
            return ReplyBody::Empty;
        }
        if data.is_empty() {
            return ReplyBody::content(data, 0, Ending::Complete);
        }
        self.bodies += 1;
        let bodies = self.bodies;
        match &mut self.fault {
            Fault::ResetAfterServed { served, bytes } if bodies > *served => {
                ReplyBody::content(data, saturating_usize(*bytes), Ending::Abort)
            }
            Fault::ResetEvery { nth, bytes } if bodies.is_multiple_of((*nth).max(1)) => {
                ReplyBody::content(data, saturating_usize(*bytes), Ending::Abort)
            }
            Fault::ResetAfter { bytes, times } if *times > 0 => {
                *times -= 1;
                ReplyBody::content(data, saturating_usize(*bytes), Ending::Abort)
            }
            Fault::Stall { after_bytes, times } if *times > 0 => {
                *times -= 1;
                ReplyBody::content(data, saturating_usize(*after_bytes), Ending::Stall)
            }
            _ => ReplyBody::content(data, usize::MAX, Ending::Complete),
        }
    }
}

fn saturating_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// The bytes of `range` followed by the next [`LONG_BODY_EXTRA`] bytes of `content`, padded with
/// [`FILLER_BYTE`] where the content ends.
fn overlong(content: &Bytes, range: Range<usize>) -> Bytes {
    let wanted = range.len() + LONG_BODY_EXTRA;
    let end = (range.start + wanted).min(content.len());
    let mut body = content[range.start..end].to_vec();
    body.resize(wanted, FILLER_BYTE);
    Bytes::from(body)
}

fn gzip(data: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(data)
        .expect("writing to a Vec cannot fail");
    Bytes::from(encoder.finish().expect("writing to a Vec cannot fail"))
}

/// A response decided under the state lock, turned into an HTTP response after it is released.
type Reply = crate::http::reply::Reply<ReplyBody>;

#[derive(Debug, Default)]
enum ReplyBody {
    #[default]
    Empty,
    /// A small error body; not paced, not counted.
    Text(&'static str),
    /// Content bytes: paced, counted, and ended as `ending` says once `data` is sent.
    Content { data: Bytes, ending: Ending },
}

impl ReplyBody {
    /// The first `limit` bytes of `data`, then `ending`.
    fn content(mut data: Bytes, limit: usize, ending: Ending) -> Self {
        data.truncate(limit);
        ReplyBody::Content { data, ending }
    }
}

impl Reply {
    fn redirect(location: &str) -> Self {
        let mut reply = Reply::new(StatusCode::FOUND);
        reply.set(header::LOCATION, location);
        reply.set(header::CONTENT_LENGTH, 0);
        reply
    }

    fn too_many_requests(retry_after: RetryAfter) -> Self {
        let mut reply = Reply::new(StatusCode::TOO_MANY_REQUESTS);
        match retry_after {
            RetryAfter::Seconds(seconds) => reply.set(header::RETRY_AFTER, seconds),
            RetryAfter::HttpDate(date) => {
                reply.set(header::RETRY_AFTER, httpdate::fmt_http_date(date));
            }
            RetryAfter::Millis(millis) => {
                reply.set(HeaderName::from_static("retry-after-ms"), millis);
            }
        }
        reply.body = ReplyBody::Text("too many requests\n");
        reply
    }

    fn plain_status(status: u16) -> Self {
        let status = StatusCode::from_u16(status).expect("Fault::Status needs a valid status");
        let mut reply = Reply::new(status);
        reply.body = ReplyBody::Text("injected fault\n");
        reply
    }

    fn method_not_allowed() -> Self {
        let mut reply = Reply::new(StatusCode::METHOD_NOT_ALLOWED);
        reply.set(header::ALLOW, "GET, HEAD");
        reply.body = ReplyBody::Text("method not allowed\n");
        reply
    }

    fn into_response(self, shared: &Arc<Shared>, flushes: Flushes) -> Response {
        self.respond(|body| match body {
            ReplyBody::Empty => Body::empty(),
            ReplyBody::Text(text) => Body::from(text),
            ReplyBody::Content { data, ending } => {
                Body::from_stream(content_stream(data, ending, shared, flushes))
            }
        })
    }
}

/// Streams one content body: in chunks, paced, counted, and ended as `ending` says. Aborts the
/// connection when the origin is dropped.
fn content_stream(
    data: Bytes,
    ending: Ending,
    shared: &Arc<Shared>,
    flushes: Flushes,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let counter = Arc::clone(shared);
    let count = move |bytes| counter.count_sent(bytes);
    let pacer = shared
        .throttle
        .map(|throttle| Pacer::new(throttle.bytes, throttle.every));
    BodySender::new(data, ending, count, shared.shutdown.subscribe(), flushes)
        .with_chunk_size(shared.chunk_size)
        .with_pacer(pacer)
        .into_stream()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpStream;
    use tokio::time::{Instant, timeout};

    use super::*;
    use crate::testing::{self, PATIENCE, RawResponse, parse_response, read_until_closed};

    fn sample(len: usize) -> Bytes {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    impl RawResponse {
        fn content_length(&self) -> usize {
            self.header("content-length").unwrap().parse().unwrap()
        }
    }

    async fn connect_and_send(
        origin: &Origin,
        method: &str,
        headers: &[(&str, &str)],
    ) -> TcpStream {
        testing::connect_and_send(origin.addr(), method, "/file.bin", headers).await
    }

    /// Sends one request and reads until the server closes (or aborts) the connection.
    async fn send(origin: &Origin, method: &str, headers: &[(&str, &str)]) -> RawResponse {
        testing::send(origin.addr(), method, "/file.bin", headers).await
    }

    fn has_body_bytes(raw: &[u8], len: usize) -> bool {
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n");
        head_end.is_some_and(|end| raw.len() >= end + 4 + len)
    }

    /// Decodes a chunked body (no trailers, no extensions).
    fn dechunk(mut raw: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = std::str::from_utf8(&raw[..line_end]).unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                return body;
            }
            let start = line_end + 2;
            body.extend_from_slice(&raw[start..start + size]);
            raw = &raw[start + size + 2..];
        }
    }

    #[tokio::test]
    async fn full_get_sends_everything_with_validators() {
        let content = sample(100_000);
        let origin = Origin::start(OriginConfig::new(content.clone())).await;

        let response = send(&origin, "GET", &[]).await;

        assert_eq!(response.status, 200);
        assert_eq!(response.body, content);
        assert_eq!(response.content_length(), content.len());
        assert_eq!(response.header("etag"), Some("\"v1-100000\""));
        assert_eq!(response.header("accept-ranges"), Some("bytes"));
        assert_eq!(
            response.header("last-modified"),
            Some("Tue, 14 Nov 2023 22:13:20 GMT")
        );
        assert_eq!(origin.body_bytes_sent(), 100_000);
        let requests = origin.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].path, "/file.bin");
        assert_eq!(requests[0].status, 200);
        assert_eq!(requests[0].header("Connection"), Some("close"));
    }

    #[tokio::test]
    async fn head_describes_without_a_body() {
        let origin = Origin::start(OriginConfig::new(sample(5000))).await;

        let response = send(&origin, "HEAD", &[]).await;

        assert_eq!(response.status, 200);
        assert_eq!(response.content_length(), 5000);
        assert!(response.body.is_empty());
        assert_eq!(origin.body_bytes_sent(), 0);
    }

    #[tokio::test]
    async fn range_get_sends_the_requested_bytes() {
        let content = sample(1000);
        let origin = Origin::start(OriginConfig::new(content.clone())).await;

        let middle = send(&origin, "GET", &[("range", "bytes=100-199")]).await;
        let suffix = send(&origin, "GET", &[("range", "bytes=-10")]).await;
        let open = send(&origin, "GET", &[("range", "bytes=990-")]).await;

        assert_eq!(middle.status, 206);
        assert_eq!(middle.header("content-range"), Some("bytes 100-199/1000"));
        assert_eq!(middle.body, content[100..200]);
        assert_eq!(suffix.header("content-range"), Some("bytes 990-999/1000"));
        assert_eq!(suffix.body, content[990..]);
        assert_eq!(open.body, content[990..]);
        assert_eq!(origin.ranged_request_count(), 3);
    }

    #[tokio::test]
    async fn unsatisfiable_and_malformed_ranges() {
        let origin = Origin::start(OriginConfig::new(sample(1000))).await;

        let beyond = send(&origin, "GET", &[("range", "bytes=1000-")]).await;
        let multi = send(&origin, "GET", &[("range", "bytes=0-1,5-6")]).await;

        assert_eq!(beyond.status, 416);
        assert_eq!(beyond.header("content-range"), Some("bytes */1000"));
        assert_eq!(multi.status, 200);
        assert_eq!(multi.body.len(), 1000);
    }

    #[tokio::test]
    async fn if_range_mismatch_sends_the_full_body() {
        let content = sample(1000);
        let origin = Origin::start(OriginConfig::new(content.clone())).await;
        let etag = "\"v1-1000\"";

        let matching = send(
            &origin,
            "GET",
            &[("range", "bytes=10-"), ("if-range", etag)],
        )
        .await;
        let stale = send(
            &origin,
            "GET",
            &[("range", "bytes=10-"), ("if-range", "\"v0\"")],
        )
        .await;
        let weak = send(
            &origin,
            "GET",
            &[("range", "bytes=10-"), ("if-range", "W/\"v1-1000\"")],
        )
        .await;
        let date = "Tue, 14 Nov 2023 22:13:20 GMT";
        let dated = send(
            &origin,
            "GET",
            &[("range", "bytes=10-"), ("if-range", date)],
        )
        .await;

        assert_eq!(matching.status, 206);
        assert_eq!(stale.status, 200);
        assert_eq!(stale.body, content);
        assert_eq!(weak.status, 200);
        assert_eq!(dated.status, 206);
    }

    #[tokio::test]
    async fn reset_after_cuts_the_body_then_recovers() {
        let content = sample(100_000);
        let fault = Fault::ResetAfter {
            bytes: 1000,
            times: 1,
        };
        let origin = Origin::start(OriginConfig::new(content.clone()).with_fault(fault)).await;

        let cut = send(&origin, "GET", &[]).await;
        let whole = send(&origin, "GET", &[]).await;

        assert_eq!(cut.content_length(), 100_000);
        assert_eq!(cut.body, content[..1000]);
        assert_eq!(whole.body, content);
        assert_eq!(origin.body_bytes_sent(), 101_000);
    }

    #[tokio::test]
    async fn reset_after_served_answers_then_cuts_every_body() {
        let content = sample(10_000);
        let fault = Fault::ResetAfterServed {
            served: 1,
            bytes: 0,
        };
        let origin = Origin::start(OriginConfig::new(content.clone()).with_fault(fault)).await;

        let first = send(&origin, "GET", &[]).await;
        let head = send(&origin, "HEAD", &[]).await;
        let cut = send(&origin, "GET", &[("range", "bytes=10-99")]).await;
        let again = send(&origin, "GET", &[]).await;

        assert_eq!(first.body, content);
        assert_eq!(head.status, 200, "a HEAD carries no body and is not cut");
        assert_eq!(cut.status, 206);
        assert!(cut.body.is_empty());
        assert!(again.body.is_empty());
        assert_eq!(origin.body_bytes_sent(), 10_000);
    }

    #[tokio::test]
    async fn reset_every_cuts_every_nth_body() {
        let content = sample(5000);
        let fault = Fault::ResetEvery { nth: 2, bytes: 100 };
        let origin = Origin::start(OriginConfig::new(content.clone()).with_fault(fault)).await;

        let mut bodies = Vec::new();
        for _ in 0..4 {
            bodies.push(send(&origin, "GET", &[]).await.body.len());
        }

        assert_eq!(bodies, vec![5000, 100, 5000, 100]);
    }

    #[tokio::test]
    async fn short_body_sends_half_the_range() {
        let content = sample(1000);
        let fault = Fault::ShortBody { times: 1 };
        let origin = Origin::start(OriginConfig::new(content.clone()).with_fault(fault)).await;

        let short = send(&origin, "GET", &[("range", "bytes=0-99")]).await;

        assert_eq!(short.content_length(), 100);
        assert_eq!(short.body, content[..50]);
    }

    #[tokio::test]
    async fn reset_after_delivers_exactly_the_bytes_before_the_cut() {
        let content = sample(4_000_000);
        let fault = Fault::ResetAfter {
            bytes: 3_000_001,
            times: 1,
        };
        let origin = Origin::start(OriginConfig::new(content.clone()).with_fault(fault)).await;

        let cut = send(&origin, "GET", &[("range", "bytes=1-")]).await;

        assert_eq!(cut.status, 206);
        assert_eq!(cut.body, content[1..3_000_002]);
    }

    #[tokio::test]
    async fn long_body_overflows_the_range_without_content_length() {
        let content = sample(1000);
        let fault = Fault::LongBody { times: 1 };
        let origin = Origin::start(OriginConfig::new(content.clone()).with_fault(fault)).await;

        let long = send(&origin, "GET", &[("range", "bytes=850-949")]).await;

        assert_eq!(long.header("content-range"), Some("bytes 850-949/1000"));
        assert_eq!(long.header("content-length"), None);
        let body = dechunk(&long.body);
        assert_eq!(body.len(), 200);
        assert_eq!(body[..150], content[850..]);
        assert!(body[150..].iter().all(|&byte| byte == FILLER_BYTE));
    }

    #[tokio::test]
    async fn lying_servers() {
        let content = sample(1000);
        let ignoring =
            Origin::start(OriginConfig::new(content.clone()).with_fault(Fault::IgnoreRange)).await;
        let shifting =
            Origin::start(OriginConfig::new(content.clone()).with_fault(Fault::WrongContentRange))
                .await;
        let plain = Origin::start(OriginConfig::new(content.clone()).without_ranges()).await;
        let range = [("range", "bytes=10-19")];

        let ignored = send(&ignoring, "GET", &range).await;
        let shifted = send(&shifting, "GET", &range).await;
        let unranged = send(&plain, "GET", &range).await;

        assert_eq!((ignored.status, ignored.body.len()), (200, 1000));
        assert_eq!(ignored.header("accept-ranges"), Some("bytes"));
        assert_eq!(shifted.header("content-range"), Some("bytes 11-19/1000"));
        assert_eq!(shifted.body, content[10..20]);
        assert_eq!((unranged.status, unranged.body.len()), (200, 1000));
        assert_eq!(unranged.header("accept-ranges"), None);
    }

    #[tokio::test]
    async fn status_and_redirect_faults() {
        let fault = Fault::Status {
            status: 503,
            times: 2,
        };
        let failing = Origin::start(OriginConfig::new(sample(10)).with_fault(fault)).await;
        let location = "http://example.invalid/elsewhere".to_owned();
        let fault = Fault::RedirectTo { location };
        let moving = Origin::start(OriginConfig::new(sample(10)).with_fault(fault)).await;

        let statuses = [
            send(&failing, "HEAD", &[]).await.status,
            send(&failing, "GET", &[]).await.status,
            send(&failing, "GET", &[]).await.status,
        ];
        let redirect = send(&moving, "GET", &[]).await;

        assert_eq!(statuses, [503, 503, 200]);
        assert_eq!(redirect.status, 302);
        assert_eq!(
            redirect.header("location"),
            Some("http://example.invalid/elsewhere")
        );
        assert_eq!(moving.body_bytes_sent(), 0);
    }

    #[tokio::test]
    async fn wait_for_body_bytes_resolves_as_bytes_flow() {
        let throttle = Throttle {
            bytes: 10_000,
            every: Duration::from_millis(20),
        };
        let config = OriginConfig::new(sample(50_000)).with_throttle(throttle);
        let origin = Origin::start(config).await;
        timeout(PATIENCE, origin.wait_for_body_bytes(0))
            .await
            .unwrap();

        let started = Instant::now();
        let download = send(&origin, "GET", &[]);
        let (response, ()) = tokio::join!(download, async {
            timeout(PATIENCE, origin.wait_for_body_bytes(20_000))
                .await
                .unwrap();
            assert!(origin.body_bytes_sent() >= 20_000);
        });

        assert_eq!(response.body.len(), 50_000);
        assert!(started.elapsed() >= Duration::from_millis(80));
    }

    #[tokio::test]
    async fn stall_goes_silent_until_the_origin_is_dropped() {
        let fault = Fault::Stall {
            after_bytes: 100,
            times: 1,
        };
        let origin = Origin::start(OriginConfig::new(sample(1000)).with_fault(fault)).await;
        let mut stream = connect_and_send(&origin, "GET", &[]).await;
        origin.wait_for_body_bytes(100).await;

        let mut received = Vec::new();
        while !has_body_bytes(&received, 100) {
            let mut buf = [0; 8192];
            let read = stream.read(&mut buf).await.unwrap();
            assert_ne!(read, 0, "connection closed early");
            received.extend_from_slice(&buf[..read]);
        }
        let mut buf = [0; 1];
        let silence = timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        assert!(silence.is_err(), "a stalled body sends nothing");
        assert_eq!(parse_response(&received).body, sample(1000)[..100]);

        drop(origin);
        let rest = timeout(PATIENCE, read_until_closed(&mut stream))
            .await
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn too_many_requests_then_success() {
        let fault = Fault::TooManyRequests {
            retry_after: RetryAfter::Millis(250),
            times: 1,
        };
        let origin = Origin::start(OriginConfig::new(sample(10)).with_fault(fault)).await;

        let limited = send(&origin, "GET", &[]).await;
        let served = send(&origin, "GET", &[]).await;

        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("retry-after-ms"), Some("250"));
        assert_eq!(served.status, 200);
        let statuses: Vec<u16> = origin.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 200]);
        assert_eq!(origin.body_bytes_sent(), 10);
    }

    #[tokio::test]
    async fn change_after_switches_content_and_validators() {
        let fault = Fault::ChangeAfter {
            requests: 1,
            new_content: sample(2000),
        };
        let origin = Origin::start(OriginConfig::new(sample(1000)).with_fault(fault)).await;

        let first = send(&origin, "HEAD", &[]).await;
        let old_etag = first.header("etag").unwrap().to_owned();
        let second = send(
            &origin,
            "GET",
            &[("range", "bytes=0-9"), ("if-range", &old_etag)],
        )
        .await;

        assert_eq!(old_etag, "\"v1-1000\"");
        assert_eq!(second.status, 200);
        assert_eq!(second.header("etag"), Some("\"v2-2000\""));
        assert_eq!(second.body, sample(2000));
        assert_eq!(origin.content(), sample(2000));
    }

    #[tokio::test]
    async fn gzip_range_compresses_the_requested_bytes() {
        let content = sample(1000);
        let origin =
            Origin::start(OriginConfig::new(content.clone()).with_fault(Fault::GzipRange)).await;

        let response = send(&origin, "GET", &[("range", "bytes=0-499")]).await;

        assert_eq!(response.header("content-encoding"), Some("gzip"));
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&response.body[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, content[..500]);
    }
}
