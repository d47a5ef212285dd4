//! A fake Claude API: the Files API and the Message Batches API, as far as claudedl uses them.
//!
//! [`MockApi::start`] binds `127.0.0.1:0` and answers like `https://api.anthropic.com` does (see
//! `/work/shared/claude-api.md`): `x-api-key` and `anthropic-version` are checked, every response
//! carries a `request-id`, errors use the `{"type":"error","error":{..},"request_id":..}` envelope,
//! `GET /v1/files` pages in the GA shape (`page`/`next_page`, `ids[]`) or, with
//! `anthropic-beta: files-api-2025-04-14`, in the beta shape (`before_id`/`after_id`,
//! `has_more`/`first_id`/`last_id`), newest first. File content and batch results support single
//! byte ranges, `ETag` and `If-Range` (switch off with [`MockApiConfig::without_ranges`]).
//!
//! On top of that it misbehaves as told: [`ApiFault`]s inject error statuses (the spend-cap
//! `429` included), cut bodies after exactly N bytes or stall them, and
//! [`MockApiConfig::rate_limit`] runs a token bucket that sends `anthropic-ratelimit-requests-*`
//! headers and `429` with `retry-after`. Faults and the limit can change while the API runs
//! ([`MockApi::push_fault`], [`MockApi::clear_faults`], [`MockApi::set_rate_limit`]).
//!
//! Large file sets cost nothing up front: [`FileSet::Generated`] computes file metadata and
//! content from the file index on demand, so a million files list as fast as ten.
//!
//! Everything is observable: every request is logged with the [`Route`] it hit, the status it
//! got and when it was decided ([`ApiRequest::at`], checked with [`max_in_window`]), and body
//! bytes of successful responses are counted per route, so tests can assert what the client did
//! and await progress without sleeping. Benchmarks read request counters ([`MockStats`]) through
//! [`MockApi::stats`] or, with [`MockApiConfig::with_stats_routes`], over HTTP.

mod batches;
mod body;
mod chaos;
mod clock;
mod control;
mod demo;
mod files;
mod handler;
#[cfg(test)]
mod limit_tests;
mod listing;
mod range;
mod rate_limit;
mod stats;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use demo::{demo_config, generated_batches};
pub use stats::MockStats;

use crate::http::lock;
use crate::http::serve::{bind_loopback, find_header, spawn_server};
use handler::ApiState;

/// The default API key of a [`MockApiConfig`].
pub const DEFAULT_API_KEY: &str = "sk-ant-mock-0000";
/// The `created_at` given by [`MockFile::new`].
pub const DEFAULT_CREATED_AT: &str = "2026-08-03T10:00:00Z";

/// One file of the Files API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockFile {
    pub id: String,
    /// Sent as is: may be hostile.
    pub filename: String,
    pub mime_type: String,
    /// RFC 3339, e.g. `2026-08-03T10:00:00Z`; lists are ordered by it (newest first).
    pub created_at: String,
    /// `false`: `/content` answers `400 invalid_request_error` (an uploaded file).
    pub downloadable: bool,
    /// `true`: still listed, but `/content` answers `404 not_found_error`.
    pub expired: bool,
    /// The bytes of `/content`; `size_bytes` is its length.
    pub content: Bytes,
}

impl MockFile {
    /// A downloadable `application/octet-stream` file created at [`DEFAULT_CREATED_AT`].
    pub fn new(
        id: impl Into<String>,
        filename: impl Into<String>,
        content: impl Into<Bytes>,
    ) -> Self {
        MockFile {
            id: id.into(),
            filename: filename.into(),
            mime_type: "application/octet-stream".to_owned(),
            created_at: DEFAULT_CREATED_AT.to_owned(),
            downloadable: true,
            expired: false,
            content: content.into(),
        }
    }

    /// Sets `created_at` (RFC 3339).
    #[must_use]
    pub fn with_created_at(mut self, created_at: impl Into<String>) -> Self {
        self.created_at = created_at.into();
        self
    }

    /// Sets `mime_type`.
    #[must_use]
    pub fn with_mime_type(mut self, mime_type: impl Into<String>) -> Self {
        self.mime_type = mime_type.into();
        self
    }

    /// Makes the file an uploaded one: listed, but `/content` gives `400`.
    #[must_use]
    pub fn not_downloadable(mut self) -> Self {
        self.downloadable = false;
        self
    }

    /// Makes the file expired: listed, but `/content` gives `404`.
    #[must_use]
    pub fn expired(mut self) -> Self {
        self.expired = true;
        self
    }
}

/// One message batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockBatch {
    pub id: String,
    /// RFC 3339; lists are ordered by it (newest first).
    pub created_at: String,
    /// `true`: `processing_status: "ended"` and results are served; `false`: `"in_progress"`,
    /// `results_url: null`, and the results URL answers `400`.
    pub ended: bool,
    pub results: Vec<MockResult>,
}

impl MockBatch {
    /// An ended batch.
    pub fn ended(
        id: impl Into<String>,
        created_at: impl Into<String>,
        results: Vec<MockResult>,
    ) -> Self {
        MockBatch {
            id: id.into(),
            created_at: created_at.into(),
            ended: true,
            results,
        }
    }

    /// A batch still in progress.
    pub fn in_progress(
        id: impl Into<String>,
        created_at: impl Into<String>,
        results: Vec<MockResult>,
    ) -> Self {
        MockBatch {
            ended: false,
            ..MockBatch::ended(id, created_at, results)
        }
    }
}

/// The outcome of one request of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockResult {
    pub custom_id: String,
    /// `succeeded`, `errored`, `canceled` or `expired`.
    pub result_type: String,
}

impl MockResult {
    pub fn new(custom_id: impl Into<String>, result_type: impl Into<String>) -> Self {
        MockResult {
            custom_id: custom_id.into(),
            result_type: result_type.into(),
        }
    }
}

/// The files an API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSet {
    /// Exactly these files.
    Explicit(Vec<MockFile>),
    /// `count` files computed on demand from their index `i` (`0..count`): id
    /// `file_{i:024}`, a filename and MIME type cycling through csv, json, png, pdf and txt,
    /// `created_at` spread from 2026-03-01 over 150 days (higher `i` is newer), all downloadable,
    /// none expired, and `content_len` bytes of content derived from `seed` and `i` (see
    /// [`generated_file`]).
    Generated {
        count: usize,
        seed: u64,
        content_len: usize,
    },
    /// Like [`FileSet::Generated`], with the length of each file drawn from `sizes`.
    Mixed {
        count: usize,
        seed: u64,
        sizes: SizeMix,
    },
}

/// The lengths of a [`FileSet::Mixed`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeMix {
    /// A file that is not big has from `min` to `max` bytes (inclusive, uniform), fixed by the
    /// seed and its index.
    pub min: usize,
    pub max: usize,
    /// This many files, spread evenly over the indices (the first at index 0), have `big_len`
    /// bytes instead.
    pub big_count: usize,
    pub big_len: usize,
}

impl SizeMix {
    /// Every file `len` bytes.
    pub fn fixed(len: usize) -> Self {
        SizeMix {
            min: len,
            max: len,
            big_count: 0,
            big_len: 0,
        }
    }
}

/// File `index` of a [`FileSet::Generated`] set, content included (what the API would serve).
pub fn generated_file(
    seed: u64,
    index: usize,
    count: usize,
    content_len: usize,
) -> Option<MockFile> {
    files::GeneratedFiles::new(count, seed, content_len).materialize(index)
}

/// The length of file `index` of a [`FileSet::Mixed`] set of `count` files.
pub fn mixed_file_len(seed: u64, index: usize, count: usize, sizes: SizeMix) -> usize {
    files::GeneratedFiles::mixed(count, seed, sizes).content_len(index)
}

/// What a [`MockApi`] serves and how it misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockApiConfig {
    /// The only accepted `x-api-key`; default [`DEFAULT_API_KEY`].
    pub api_key: String,
    pub files: FileSet,
    pub batches: Vec<MockBatch>,
    /// `true` (default): `Range`, `ETag`, `Last-Modified`, `If-Range` and `Accept-Ranges` on file
    /// content and batch results. `false`: always `200` with the full body and no validators.
    pub ranges: bool,
    /// Requests per minute (a token bucket of that capacity, refilled continuously at
    /// `limit / 60` per second); `None`: unlimited and no `anthropic-ratelimit-*` headers.
    pub rate_limit: Option<u32>,
    /// The bucket's capacity instead of `rate_limit` (at least 1), e.g. `10` at 600/min to
    /// enforce the limit per second; kept when the limit changes. `None`: the limit.
    pub rate_limit_burst: Option<u32>,
    /// Checked in order; the first one that matches and has `times` left applies.
    pub faults: Vec<ApiFault>,
    /// `true`: `results_url` is absolute (`http://127.0.0.1:PORT/v1/...`); `false` (default):
    /// relative (`/v1/messages/batches/{id}/results`).
    pub absolute_results_url: bool,
    /// File objects sent as they are, after the files of the first page of `GET /v1/files`
    /// (GA shape, no `page`): malformed entries (`"size_bytes": -1`, no `filename`, an id of
    /// `..`) a client must survive. Never served otherwise (no content, no metadata).
    pub raw_listed: Vec<serde_json::Value>,
    /// `true`: `GET /_mock/stats` and `POST /_mock/reset-stats` answer with [`MockStats`] (no
    /// key, never limited, not logged). `false` (default): those paths are unknown API paths
    /// (`404`), so tests see the API exactly as before.
    pub stats_routes: bool,
    /// How the server's limits look to a client (see [`ServerLimits`]).
    pub limits: ServerLimits,
    /// Random `503`/`529` answers and body resets at fixed rates (after the [`ApiFault`]s);
    /// `None` (default): none.
    pub chaos: Option<Chaos>,
}

/// Limits a real server imposes beyond the request budget, and what it tells about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// `true` (default): every answer carries the `anthropic-ratelimit-requests-*` headers of
    /// the rate limit. `false`: the limit is enforced (`429` + `retry-after`) but never
    /// advertised, like an API whose headers are not documented.
    pub rate_limit_headers: bool,
    /// Successful bodies are sent at most this fast, each (one body per connection at a time:
    /// a per-connection bandwidth cap). `None`: as fast as the connection goes.
    pub connection_bytes_per_second: Option<u64>,
    /// Sent as `anthropic-organization-id` on every answer.
    pub organisation: Option<String>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            rate_limit_headers: true,
            connection_bytes_per_second: None,
            organisation: None,
        }
    }
}

/// Random misbehaviour for soaks, deterministic for a seed and a request order: each API request
/// gets `503` with probability `status_503_permille`/1000, else `529` with
/// `status_529_permille`/1000; each successful non-empty body of file content or batch results
/// is cut (connection aborted) at a random byte with probability `reset_permille`/1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chaos {
    pub seed: u64,
    pub reset_permille: u32,
    pub status_503_permille: u32,
    pub status_529_permille: u32,
}

impl MockApiConfig {
    /// A well-behaved API serving `files`, without batches.
    pub fn new(files: FileSet) -> Self {
        MockApiConfig {
            api_key: DEFAULT_API_KEY.to_owned(),
            files,
            batches: Vec::new(),
            ranges: true,
            rate_limit: None,
            faults: Vec::new(),
            absolute_results_url: false,
            rate_limit_burst: None,
            stats_routes: false,
            limits: ServerLimits::default(),
            chaos: None,
            raw_listed: Vec::new(),
        }
    }

    /// Adds file objects sent as they are on the first page of the listing (see
    /// [`MockApiConfig::raw_listed`]).
    #[must_use]
    pub fn with_raw_listed(mut self, entries: Vec<serde_json::Value>) -> Self {
        self.raw_listed.extend(entries);
        self
    }

    /// Sets the batches.
    #[must_use]
    pub fn with_batches(mut self, batches: Vec<MockBatch>) -> Self {
        self.batches = batches;
        self
    }

    /// Adds a fault (after those already configured).
    #[must_use]
    pub fn with_fault(mut self, fault: ApiFault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Ignores `Range` and sends no validators nor `Accept-Ranges`.
    #[must_use]
    pub fn without_ranges(mut self) -> Self {
        self.ranges = false;
        self
    }

    /// Limits requests to `per_minute`.
    #[must_use]
    pub fn with_rate_limit(mut self, per_minute: u32) -> Self {
        self.rate_limit = Some(per_minute);
        self
    }

    /// Caps the rate limit's bucket at `capacity` tokens (at least 1) instead of the per-minute
    /// limit: `with_rate_limit(600).with_rate_limit_burst(10)` allows about one second's worth
    /// at once. The `-limit` header stays per minute.
    #[must_use]
    pub fn with_rate_limit_burst(mut self, capacity: u32) -> Self {
        self.rate_limit_burst = Some(capacity);
        self
    }

    /// Serves `GET /_mock/stats` and `POST /_mock/reset-stats` (see [`MockStats`]).
    #[must_use]
    pub fn with_stats_routes(mut self) -> Self {
        self.stats_routes = true;
        self
    }

    /// Misbehaves at random as `chaos` says.
    #[must_use]
    pub fn with_chaos(mut self, chaos: Chaos) -> Self {
        self.chaos = Some(chaos);
        self
    }

    /// Sets the accepted API key.
    #[must_use]
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = api_key.into();
        self
    }

    /// Makes `results_url` absolute.
    #[must_use]
    pub fn with_absolute_results_url(mut self) -> Self {
        self.absolute_results_url = true;
        self
    }
}

/// The server's limits beyond the request budget (kept apart from the faults and listings).
impl MockApiConfig {
    /// Enforces the rate limit without ever sending `anthropic-ratelimit-requests-*` headers.
    #[must_use]
    pub fn with_silent_rate_limit(mut self, per_minute: u32) -> Self {
        self.rate_limit = Some(per_minute);
        self.limits.rate_limit_headers = false;
        self
    }

    /// Sends each successful body at most `bytes_per_second` fast.
    #[must_use]
    pub fn with_connection_cap(mut self, bytes_per_second: u64) -> Self {
        self.limits.connection_bytes_per_second = Some(bytes_per_second);
        self
    }

    /// Names `organisation` in `anthropic-organization-id` on every answer.
    #[must_use]
    pub fn with_organisation(mut self, organisation: impl Into<String>) -> Self {
        self.limits.organisation = Some(organisation.into());
        self
    }
}

impl Default for MockApiConfig {
    /// No files, no batches.
    fn default() -> Self {
        MockApiConfig::new(FileSet::Explicit(Vec::new()))
    }
}

/// What a request asked for, by path shape (any method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/v1/files`
    ListFiles,
    /// `/v1/files/{id}`
    FileMeta,
    /// `/v1/files/{id}/content`
    FileContent,
    /// `/v1/messages/batches`
    ListBatches,
    /// `/v1/messages/batches/{id}`
    BatchMeta,
    /// `/v1/messages/batches/{id}/results`
    BatchResults,
    /// Anything else (answered `404 not_found_error`).
    Other,
}

/// Body bytes sent, per [`Route::index`].
type SentBytes = [u64; Route::ALL.len()];

impl Route {
    const ALL: [Route; 7] = [
        Route::ListFiles,
        Route::FileMeta,
        Route::FileContent,
        Route::ListBatches,
        Route::BatchMeta,
        Route::BatchResults,
        Route::Other,
    ];

    /// The route's name in [`MockStats`]: `list_files`, `file_meta`, `file_content`,
    /// `list_batches`, `batch_meta`, `batch_results`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            Route::ListFiles => "list_files",
            Route::FileMeta => "file_meta",
            Route::FileContent => "file_content",
            Route::ListBatches => "list_batches",
            Route::BatchMeta => "batch_meta",
            Route::BatchResults => "batch_results",
            Route::Other => "other",
        }
    }

    fn index(self) -> usize {
        Route::ALL
            .iter()
            .position(|route| *route == self)
            .expect("ALL lists every route")
    }
}

/// A named misbehaviour, applied to the requests of one [`Route`].
///
/// Counters count down under a lock, in request order, so every run behaves the same. Faults
/// apply after authentication and the rate limit, before the request is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFault {
    /// The first `times` requests to `route` get `status` with the error envelope of that status
    /// (`429 rate_limit_error`, `529 overloaded_error`, `500`/`503 api_error`, ...), and
    /// `retry-after: retry_after_secs` when given.
    Status {
        route: Route,
        status: u16,
        times: u32,
        retry_after_secs: Option<u64>,
    },
    /// The first `times` successful (`200`/`206`) non-empty `GET` bodies of `route` are cut
    /// (connection aborted) after `bytes` body bytes; the client receives exactly those bytes.
    /// A body no longer than `bytes` completes normally but still uses up one of `times`.
    ResetAfter {
        route: Route,
        bytes: u64,
        times: u32,
    },
    /// The first `times` successful non-empty `GET` bodies of `route` send `after_bytes` body
    /// bytes, then go silent for at most 120 s (or until the API is dropped), then abort.
    Stall {
        route: Route,
        after_bytes: u64,
        times: u32,
    },
    /// The first `times` requests to `route` get the spend-cap `429`: `rate_limit_error` with
    /// `details.error_code = "enforced_spend_limit_reached"` and no `retry-after`.
    SpendLimit { route: Route, times: u32 },
    /// The first `times` successful list pages of `route` ([`Route::ListFiles`],
    /// [`Route::ListBatches`]) page as `fault` says, in either page shape.
    Listing {
        route: Route,
        fault: ListingFault,
        times: u32,
    },
}

/// A pagination that never ends (see [`ApiFault::Listing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingFault {
    /// Each page claims there is more and points back to the cursor it was asked with (the
    /// first page to its own last item): GA `next_page` repeats; beta `has_more: true` with the
    /// same `last_id`. The items are the right ones for the cursor.
    RepeatCursor,
    /// Each page is the first page again (the cursor is ignored), claims there is more and
    /// points to a cursor never given before (`page_loop_N`; beta `last_id` `LAST~loopN`).
    RepeatItems,
}

/// One request as the API saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The raw query string (without `?`), empty if none.
    pub query: String,
    /// All request headers; names lowercase, values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The status chosen for the response.
    pub status: u16,
    pub route: Route,
    /// When the response was decided, since the API started (tokio's clock: paused time
    /// applies).
    pub at: Duration,
}

impl ApiRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// The most `requests` that `filter` accepts within any half-open window `[t, t + window)`:
/// e.g. with `window` = 1 s, no second held more. `0` for a zero `window` or no request.
pub fn max_in_window(
    requests: &[ApiRequest],
    window: Duration,
    filter: impl Fn(&ApiRequest) -> bool,
) -> usize {
    let mut times: Vec<Duration> = requests
        .iter()
        .filter(|request| filter(request))
        .map(|request| request.at)
        .collect();
    times.sort_unstable();
    let mut most = 0;
    let mut start = 0;
    for (end, at) in times.iter().enumerate() {
        while start <= end && *at - times[start] >= window {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most
}

/// A running fake API on `127.0.0.1`; stops accepting, and aborts the bodies it is still sending,
/// when dropped.
#[derive(Debug)]
pub struct MockApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl MockApi {
    /// Binds an ephemeral loopback port and starts serving `config`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or a `created_at` is not RFC 3339.
    pub async fn start(config: MockApiConfig) -> MockApi {
        MockApi::bind(config, 0)
            .await
            .expect("bind a loopback port")
    }

    /// Binds `127.0.0.1:port` (`0`: any free port) and starts serving `config`.
    ///
    /// # Panics
    ///
    /// If a `created_at` is not RFC 3339.
    pub async fn bind(config: MockApiConfig, port: u16) -> io::Result<MockApi> {
        let (listener, addr) = bind_loopback(port).await?;
        let shared = Arc::new(Shared::new(config, format!("http://{addr}")));
        let app = Router::new()
            .fallback(handler::serve_request)
            .with_state(Arc::clone(&shared));
        let server = spawn_server(listener, app, &shared.shutdown);
        Ok(MockApi {
            addr,
            shared,
            server,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The accepted `x-api-key`.
    pub fn api_key(&self) -> String {
        lock(&self.shared.state).api_key().to_owned()
    }

    /// Every request so far, in the order they were decided.
    pub fn requests(&self) -> Vec<ApiRequest> {
        lock(&self.shared.state).log.clone()
    }

    /// [`max_in_window`] over the requests so far.
    pub fn max_in_window(&self, window: Duration, filter: impl Fn(&ApiRequest) -> bool) -> usize {
        max_in_window(&lock(&self.shared.state).log, window, filter)
    }

    /// Changes the requests-per-minute limit at once; the next response's headers show it.
    /// Lowering keeps at most the new capacity of tokens, raising keeps the tokens there are;
    /// from unlimited, the bucket starts full; `None`: unlimited (and no headers).
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        lock(&self.shared.state).set_rate_limit(per_minute);
    }

    /// Adds a fault after those configured (and those left over).
    pub fn push_fault(&self, fault: ApiFault) {
        lock(&self.shared.state).push_fault(fault);
    }

    /// Removes every fault, used up or not.
    pub fn clear_faults(&self) {
        lock(&self.shared.state).clear_faults();
    }

    /// The request counters since the start or the last [`MockApi::reset_stats`].
    pub fn stats(&self) -> MockStats {
        let sent = *self.shared.sent.borrow();
        lock(&self.shared.state).stats(sent)
    }

    /// Zeroes the counters and starts a new window; returns the window it closed.
    pub fn reset_stats(&self) -> MockStats {
        let sent = *self.shared.sent.borrow();
        lock(&self.shared.state).reset_stats(sent)
    }

    /// How many requests hit `route` so far (whatever their status).
    pub fn count(&self, route: Route) -> usize {
        lock(&self.shared.state)
            .log
            .iter()
            .filter(|request| request.route == route)
            .count()
    }

    /// Body bytes of successful (`200`/`206`) responses to `route` handed to connections so far.
    /// Error bodies are not counted.
    pub fn body_bytes_sent(&self, route: Route) -> u64 {
        self.shared.sent.borrow()[route.index()]
    }

    /// Resolves once [`MockApi::body_bytes_sent`] for `route` reaches `n`.
    pub async fn wait_for_body_bytes(&self, route: Route, n: u64) {
        let mut sent = self.shared.sent.subscribe();
        // The sender lives in `self.shared`, so this cannot fail while `self` is borrowed.
        let _ = sent.wait_for(|totals| totals[route.index()] >= n).await;
    }

    /// Adds a file; it is listed by its `created_at` like the others, so give it the newest
    /// `created_at` to make it appear first (as a freshly created file does).
    ///
    /// # Panics
    ///
    /// If `created_at` is not RFC 3339.
    pub fn add_file(&self, file: MockFile) {
        lock(&self.shared.state).files.insert(file);
    }

    /// The file `id` as served (generated content materialised), if it exists.
    pub fn file(&self, id: &str) -> Option<MockFile> {
        lock(&self.shared.state).files.materialize(id)
    }

    /// The JSONL results body of batch `id` as served (lines in served order), if the batch exists
    /// and has ended.
    pub fn results_body(&self, id: &str) -> Option<Bytes> {
        lock(&self.shared.state).batches.results_body(id)
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.server.abort();
    }
}

/// State shared by the [`MockApi`] handle, the request handler and the body streams.
#[derive(Debug)]
struct Shared {
    state: Mutex<ApiState>,
    base_url: String,
    /// Whether `/_mock/*` control routes are served.
    stats_routes: bool,
    /// Successful body bytes sent, per [`Route::index`].
    sent: watch::Sender<SentBytes>,
    shutdown: watch::Sender<bool>,
    /// [`ServerLimits::connection_bytes_per_second`].
    connection_cap: Option<u64>,
}

impl Shared {
    fn new(config: MockApiConfig, base_url: String) -> Self {
        Shared {
            stats_routes: config.stats_routes,
            connection_cap: config.limits.connection_bytes_per_second,
            state: Mutex::new(ApiState::new(config)),
            base_url,
            sent: watch::Sender::new([0; Route::ALL.len()]),
            shutdown: watch::Sender::new(false),
        }
    }

    fn count_sent(&self, route: Route, bytes: usize) {
        self.sent
            .send_modify(|totals| totals[route.index()] += bytes as u64);
    }
}
