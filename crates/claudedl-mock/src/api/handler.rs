//! Request handling: routing, authentication, the rate limit, faults, and the replies (the
//! `/_mock/*` control routes, when enabled, are answered before any of that: see
//! [`super::control`]).
//!
//! Every decision about a response is taken under the state lock, in request order; the body is
//! streamed after the lock is released.

use std::sync::Arc;

use tokio::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;

use super::batches::{BatchStore, StoredBatch};
use super::body::{BodySource, CountedBody};
use super::chaos::ChaosState;
use super::control;
use super::files::{FileStore, FileView};
use super::listing::{
    Keyed as _, Query, decode_cursor, encode_cursor, id_page_body, older_page, parse_limit,
    percent_decode,
};
use super::range::{Validators, requested_range};
use super::rate_limit::TokenBucket;
use super::stats::{MockStats, StatsWindow};
use super::{ApiFault, ApiRequest, ListingFault, MockApiConfig, Route, SentBytes, Shared};
use crate::http::body::Ending;
use crate::http::lock;
use crate::http::range::ByteRange;
use crate::http::serve::{Flushes, header_pairs};

/// The beta that switches `GET /v1/files` to the id-based page shape.
const FILES_BETA: &str = "files-api-2025-04-14";
/// Most ids one `ids[]` request may name.
const MAX_IDS: usize = 100;
const JSON: &str = "application/json";
const JSONL: &str = "application/x-jsonl";
const OCTET_STREAM: &str = "application/octet-stream";
/// `error.details.error_code` of the spend-cap `429`.
const SPEND_LIMIT_CODE: &str = "enforced_spend_limit_reached";

/// The one handler: sees every request, on every path, with every method.
pub(super) async fn serve_request(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(flushes): ConnectInfo<Flushes>,
    request: Request,
) -> Response {
    let (parts, _body) = request.into_parts();
    if shared.stats_routes
        && let Some(response) = control::answer(&parts, &shared)
    {
        return response;
    }
    let reply = lock(&shared.state).answer(&parts, &shared.base_url);
    reply.into_response(&shared, flushes)
}

/// Mutable API state; also the request log, so the log order is the decision order.
#[derive(Debug)]
pub(super) struct ApiState {
    api_key: String,
    pub(super) files: FileStore,
    pub(super) batches: BatchStore,
    faults: Vec<ApiFault>,
    bucket: Option<TokenBucket>,
    /// Whether the limit is advertised, and the organisation named (see `ServerLimits`).
    rate_limit_headers: bool,
    organisation: Option<String>,
    /// The burst capacity of every bucket, including those [`ApiState::set_rate_limit`] makes.
    burst: Option<u32>,
    ranges: bool,
    absolute_results_url: bool,
    chaos: Option<ChaosState>,
    /// Sent after the files of the first GA page, as they are.
    raw_listed: Vec<serde_json::Value>,
    requests_seen: u64,
    /// When the API started: [`ApiRequest::at`] counts from here.
    started: Instant,
    stats: StatsWindow,
    pub(super) log: Vec<ApiRequest>,
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    ListFiles,
    File(String),
    FileContent(String),
    ListBatches,
    Batch(String),
    BatchResults(String),
    Other,
}

impl Target {
    fn parse(path: &str) -> Target {
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Target::Other;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let id = |segment: &str| percent_decode(segment);
        match segments.as_slice() {
            ["files"] => Target::ListFiles,
            ["files", file] if !file.is_empty() => Target::File(id(file)),
            ["files", file, "content"] if !file.is_empty() => Target::FileContent(id(file)),
            ["messages", "batches"] => Target::ListBatches,
            ["messages", "batches", batch] if !batch.is_empty() => Target::Batch(id(batch)),
            ["messages", "batches", batch, "results"] if !batch.is_empty() => {
                Target::BatchResults(id(batch))
            }
            _ => Target::Other,
        }
    }

    fn route(&self) -> Route {
        match self {
            Target::ListFiles => Route::ListFiles,
            Target::File(_) => Route::FileMeta,
            Target::FileContent(_) => Route::FileContent,
            Target::ListBatches => Route::ListBatches,
            Target::Batch(_) => Route::BatchMeta,
            Target::BatchResults(_) => Route::BatchResults,
            Target::Other => Route::Other,
        }
    }
}

/// An error answered with the API's error envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_secs: Option<u64>,
    /// `error.details.error_code`, when the error has one.
    error_code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_secs: None,
            error_code: None,
        }
    }

    /// The spend-cap `429`: `enforced_spend_limit_reached`, and no `retry-after`.
    fn spend_limit() -> Self {
        ApiError {
            error_code: Some(SPEND_LIMIT_CODE),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "You have reached your specified API usage limits. You will regain access on \
                 the date set by your spend limit.",
            )
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// The envelope's `error.type` for this status.
    fn error_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            529 => "overloaded_error",
            500.. => "api_error",
            _ => "invalid_request_error",
        }
    }
}

impl ApiState {
    pub(super) fn new(config: MockApiConfig) -> Self {
        let burst = config.rate_limit_burst;
        let mut bucket = config
            .rate_limit
            .map(|limit| TokenBucket::new(limit, burst));
        let tokens = bucket.as_mut().map_or(0.0, TokenBucket::tokens);
        ApiState {
            api_key: config.api_key,
            files: FileStore::new(config.files),
            batches: BatchStore::new(config.batches),
            faults: config.faults,
            bucket,
            rate_limit_headers: config.limits.rate_limit_headers,
            organisation: config.limits.organisation,
            burst,
            ranges: config.ranges,
            absolute_results_url: config.absolute_results_url,
            chaos: config.chaos.map(ChaosState::new),
            raw_listed: config.raw_listed,
            requests_seen: 0,
            started: Instant::now(),
            stats: StatsWindow::new(tokens, [0; Route::ALL.len()]),
            log: Vec::new(),
        }
    }

    pub(super) fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The requests-per-minute limit now; `None`: unlimited.
    fn limit(&self) -> Option<u32> {
        self.bucket.as_ref().map(TokenBucket::limit)
    }

    /// Changes the limit at once (see [`super::MockApi::set_rate_limit`]).
    pub(super) fn set_rate_limit(&mut self, limit: Option<u32>) {
        self.stats.accrue(self.limit());
        match (limit, &mut self.bucket) {
            (None, _) => self.bucket = None,
            (Some(limit), Some(bucket)) => bucket.set_limit(limit),
            (Some(limit), None) => {
                let bucket = TokenBucket::new(limit, self.burst);
                self.stats.grant(f64::from(bucket.capacity()));
                self.bucket = Some(bucket);
            }
        }
    }

    pub(super) fn push_fault(&mut self, fault: ApiFault) {
        self.faults.push(fault);
    }

    pub(super) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The counters of the current window; `sent`: body bytes sent since the API started.
    pub(super) fn stats(&mut self, sent: SentBytes) -> MockStats {
        let capacity = self.bucket.as_ref().map(TokenBucket::capacity);
        self.stats.snapshot(self.limit(), capacity, sent)
    }

    /// Closes the current window (returned) and starts a new one with zeroed counters.
    pub(super) fn reset_stats(&mut self, sent: SentBytes) -> MockStats {
        let closed = self.stats(sent);
        let tokens = self.bucket.as_mut().map_or(0.0, TokenBucket::tokens);
        self.stats = StatsWindow::new(tokens, sent);
        closed
    }

    fn answer(&mut self, parts: &Parts, base_url: &str) -> Reply {
        self.requests_seen += 1;
        let request_id = format!("req_mock_{}", self.requests_seen);
        let target = Target::parse(parts.uri.path());
        let mut reply = self
            .decide(parts, &target, base_url)
            .unwrap_or_else(|error| Reply::error(&error, &request_id));
        reply.set(HeaderName::from_static("request-id"), request_id);
        self.limit_headers(&mut reply);
        self.record(parts, target.route(), reply.status);
        reply
    }

    /// The rate limit's headers (unless it is silent) and the organisation.
    fn limit_headers(&mut self, reply: &mut Reply) {
        if let Some(bucket) = self.bucket.as_mut().filter(|_| self.rate_limit_headers) {
            for (name, value) in bucket.headers() {
                reply.set(HeaderName::from_static(name), value);
            }
        }
        if let Some(organisation) = &self.organisation {
            reply.set(
                HeaderName::from_static("anthropic-organization-id"),
                organisation.clone(),
            );
        }
    }

    /// Authentication, the rate limit and faults first, then the request itself.
    fn decide(
        &mut self,
        parts: &Parts,
        target: &Target,
        base_url: &str,
    ) -> Result<Reply, ApiError> {
        self.authenticate(&parts.headers)?;
        self.take_token()?;
        self.status_fault(target.route())?;
        self.chaos_status()?;
        let mut reply = self.handle(parts, target, base_url)?;
        if let ReplyBody::Counted(body) = &mut reply.body {
            self.body_fault(body);
            self.chaos_reset(body);
        }
        Ok(reply)
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let unauthorized = |message| ApiError::new(StatusCode::UNAUTHORIZED, message);
        // A bearer token (what the SDKs send for ANTHROPIC_AUTH_TOKEN) stands for the key.
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|token| HeaderValue::from_str(token).ok());
        let key = headers.get("x-api-key").cloned().or(bearer.flatten());
        match key.as_ref() {
            None => return Err(unauthorized("x-api-key header is required")),
            Some(key) if key.as_bytes() != self.api_key.as_bytes() => {
                return Err(unauthorized("invalid x-api-key"));
            }
            Some(_) => {}
        }
        if !headers.contains_key("anthropic-version") {
            return Err(ApiError::invalid("anthropic-version: header is required"));
        }
        Ok(())
    }

    fn take_token(&mut self) -> Result<(), ApiError> {
        let Some(bucket) = &mut self.bucket else {
            return Ok(());
        };
        bucket.try_take().map_err(|wait_secs| ApiError {
            retry_after_secs: Some(wait_secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded: requests per minute",
            )
        })
    }

    /// The first [`ApiFault::Status`] or [`ApiFault::SpendLimit`] for `route` with `times` left.
    fn status_fault(&mut self, route: Route) -> Result<(), ApiError> {
        for fault in &mut self.faults {
            match fault {
                ApiFault::Status {
                    route: faulty,
                    status,
                    times,
                    retry_after_secs,
                } if *faulty == route && *times > 0 => {
                    *times -= 1;
                    let status = StatusCode::from_u16(*status)
                        .expect("ApiFault::Status needs a valid status");
                    return Err(ApiError {
                        retry_after_secs: *retry_after_secs,
                        ..ApiError::new(status, format!("injected fault: {}", status.as_u16()))
                    });
                }
                ApiFault::SpendLimit {
                    route: faulty,
                    times,
                } if *faulty == route && *times > 0 => {
                    *times -= 1;
                    return Err(ApiError::spend_limit());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Cuts or stalls `body` as the first matching body fault with `times` left says.
    fn body_fault(&mut self, body: &mut CountedBody) {
        if body.source.len() == 0 {
            return;
        }
        for fault in &mut self.faults {
            let (limit, ending) = match fault {
                ApiFault::ResetAfter {
                    route,
                    bytes,
                    times,
                } if *route == body.route && *times > 0 => {
                    *times -= 1;
                    (*bytes, Ending::Abort)
                }
                ApiFault::Stall {
                    route,
                    after_bytes,
                    times,
                } if *route == body.route && *times > 0 => {
                    *times -= 1;
                    (*after_bytes, Ending::Stall)
                }
                _ => continue,
            };
            if body.source.len() > limit {
                body.cut(limit, ending);
            }
            return;
        }
    }

    /// A random `503`/`529` of [`super::Chaos`].
    fn chaos_status(&mut self) -> Result<(), ApiError> {
        match self.chaos.as_mut().and_then(ChaosState::status) {
            Some(status) => Err(ApiError::new(status, format!("chaos: {}", status.as_u16()))),
            None => Ok(()),
        }
    }

    /// A random body reset of [`super::Chaos`] (a body already cut by a fault stays as it is).
    fn chaos_reset(&mut self, body: &mut CountedBody) {
        let Some(chaos) = &mut self.chaos else {
            return;
        };
        if !matches!(body.ending, Ending::Complete) {
            return;
        }
        if let Some(at) = chaos.reset_at(body.route, body.source.len()) {
            body.cut(at, Ending::Abort);
        }
    }

    /// The first [`ApiFault::Listing`] for `route` with `times` left, used up by one.
    fn listing_fault(&mut self, route: Route) -> Option<ListingFault> {
        self.faults
            .iter_mut()
            .find_map(|candidate| match candidate {
                ApiFault::Listing {
                    route: faulty,
                    fault,
                    times,
                } if *faulty == route && *times > 0 => {
                    *times -= 1;
                    Some(*fault)
                }
                _ => None,
            })
    }

    fn handle(
        &mut self,
        parts: &Parts,
        target: &Target,
        base_url: &str,
    ) -> Result<Reply, ApiError> {
        let is_get = parts.method == Method::GET;
        if !is_get && parts.method != Method::HEAD {
            let message = format!("{} is not supported by the mock on this path", parts.method);
            return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message));
        }
        let query = Query::parse(parts.uri.query().unwrap_or(""));
        let route = target.route();
        match target {
            Target::ListFiles => {
                let fault = self.listing_fault(route);
                let body = if files_beta(&parts.headers) {
                    self.list_files_beta(&query, fault)?
                } else {
                    self.list_files_ga(&query, fault)?
                };
                Ok(Reply::json(route, body, is_get))
            }
            Target::File(id) => {
                let file = self.file(id)?;
                Ok(Reply::json(
                    route,
                    to_json(&file.object(!files_beta(&parts.headers))),
                    is_get,
                ))
            }
            Target::FileContent(id) => self.file_content(id, &parts.headers, is_get),
            Target::ListBatches => {
                let fault = self.listing_fault(route);
                let body = self.list_batches(&query, base_url, fault)?;
                Ok(Reply::json(route, body, is_get))
            }
            Target::Batch(id) => {
                let batch = self.batch(id)?;
                let base = self.results_base(base_url);
                Ok(Reply::json(route, to_json(&batch.object(base)), is_get))
            }
            Target::BatchResults(id) => self.batch_results(id, &parts.headers, is_get),
            Target::Other => Err(ApiError::not_found(format!(
                "{}: no such endpoint in the mock",
                parts.uri.path()
            ))),
        }
    }

    fn file(&self, id: &str) -> Result<FileView, ApiError> {
        self.files
            .get(id)
            .ok_or_else(|| ApiError::not_found(format!("file {id} not found")))
    }

    fn batch(&self, id: &str) -> Result<Arc<StoredBatch>, ApiError> {
        self.batches
            .get(id)
            .ok_or_else(|| ApiError::not_found(format!("message batch {id} not found")))
    }

    fn results_base<'a>(&self, base_url: &'a str) -> &'a str {
        if self.absolute_results_url {
            base_url
        } else {
            ""
        }
    }

    /// The GA shape: `page`/`limit` or `ids[]`; `{data, next_page}`.
    fn list_files_ga(&self, query: &Query, fault: Option<ListingFault>) -> Result<Bytes, ApiError> {
        if query.has("before_id") || query.has("after_id") {
            return Err(ApiError::invalid(format!(
                "before_id and after_id need the anthropic-beta: {FILES_BETA} header; use page"
            )));
        }
        let ids: Vec<&str> = query.all("ids[]").chain(query.all("ids")).collect();
        if !ids.is_empty() {
            return self.files_by_id(&ids);
        }
        let limit = parse_limit(query)?;
        let requested = query
            .first("page")
            .filter(|_| fault != Some(ListingFault::RepeatItems));
        let cursor = match requested {
            None => None,
            Some(page) => Some(
                decode_cursor(page)
                    .ok_or_else(|| ApiError::invalid(format!("page: invalid cursor {page:?}")))?,
            ),
        };
        let page = older_page(&self.files, cursor.as_ref(), limit);
        let own_next = || page.items.last().map(|file| encode_cursor(file.key()));
        let next_page = match fault {
            None => page.has_more.then(own_next).flatten(),
            Some(ListingFault::RepeatCursor) => requested.map(str::to_owned).or_else(own_next),
            Some(ListingFault::RepeatItems) => Some(format!("page_loop_{}", self.requests_seen)),
        };
        let data: Vec<serde_json::Value> = page
            .items
            .iter()
            .map(|file| serde_json::to_value(file.object(true)).expect("a file object is JSON"))
            .chain(
                cursor
                    .is_none()
                    .then(|| self.raw_listed.clone())
                    .into_iter()
                    .flatten(),
            )
            .collect();
        Ok(to_json(&GaPageBody { data, next_page }))
    }

    /// `ids[]`: the named files that exist, in the order named, as one page.
    fn files_by_id(&self, ids: &[&str]) -> Result<Bytes, ApiError> {
        if ids.len() > MAX_IDS {
            return Err(ApiError::invalid(format!(
                "ids[]: at most {MAX_IDS} ids, got {}",
                ids.len()
            )));
        }
        let files: Vec<FileView> = ids.iter().filter_map(|id| self.files.get(id)).collect();
        let data = files.iter().map(|file| file.object(true)).collect();
        Ok(to_json(&GaPageBody {
            data,
            next_page: None,
        }))
    }

    /// The beta shape: `before_id`/`after_id`/`limit`; `{data, has_more, first_id, last_id}`.
    fn list_files_beta(
        &self,
        query: &Query,
        fault: Option<ListingFault>,
    ) -> Result<Bytes, ApiError> {
        let page = id_page_body(&self.files, query, fault, self.requests_seen)?;
        Ok(to_json(&page.show(|file| file.object(false))))
    }

    fn list_batches(
        &self,
        query: &Query,
        base_url: &str,
        fault: Option<ListingFault>,
    ) -> Result<Bytes, ApiError> {
        let base = self.results_base(base_url);
        let page = id_page_body(&self.batches, query, fault, self.requests_seen)?;
        Ok(to_json(&page.show(|batch| batch.object(base))))
    }

    fn file_content(&self, id: &str, headers: &HeaderMap, is_get: bool) -> Result<Reply, ApiError> {
        let file = self.file(id)?;
        if file.expired {
            return Err(ApiError::not_found(format!("file {id} has expired")));
        }
        if !file.downloadable {
            return Err(ApiError::invalid(format!(
                "file {id} is not downloadable: only files created by skills or the code \
                 execution tool can be downloaded"
            )));
        }
        let representation = Representation {
            validators: Validators {
                etag: format!("\"{id}-{}\"", file.content.len()),
                last_modified: file.created(),
            },
            source: file.content,
            content_type: OCTET_STREAM,
            route: Route::FileContent,
        };
        Ok(self.representation_reply(representation, headers, is_get))
    }

    fn batch_results(
        &self,
        id: &str,
        headers: &HeaderMap,
        is_get: bool,
    ) -> Result<Reply, ApiError> {
        let batch = self.batch(id)?;
        if !batch.batch.ended {
            return Err(ApiError::invalid(format!(
                "message batch {id} has not ended: results are not available yet"
            )));
        }
        let body = batch.results_body();
        let representation = Representation {
            validators: Validators {
                etag: format!("\"{id}-{}\"", body.len()),
                last_modified: batch.ended_at(),
            },
            source: BodySource::Bytes(body),
            content_type: JSONL,
            route: Route::BatchResults,
        };
        Ok(self.representation_reply(representation, headers, is_get))
    }

    /// `200`, `206` or `416` for a byte representation, honouring `Range` when enabled.
    fn representation_reply(
        &self,
        representation: Representation,
        headers: &HeaderMap,
        is_get: bool,
    ) -> Reply {
        let len = representation.source.len();
        let range = self
            .ranges
            .then(|| requested_range(headers, &representation.validators, len))
            .flatten();
        let status = match range {
            None => StatusCode::OK,
            Some(ByteRange::Unsatisfiable) => StatusCode::RANGE_NOT_SATISFIABLE,
            Some(ByteRange::Satisfiable(_)) => StatusCode::PARTIAL_CONTENT,
        };
        let mut reply = Reply::new(status);
        reply.set(header::CONTENT_TYPE, representation.content_type);
        if self.ranges {
            representation.describe(&mut reply);
        }
        let body = match range {
            None => representation.source,
            Some(ByteRange::Unsatisfiable) => {
                reply.set(header::CONTENT_RANGE, format!("bytes */{len}"));
                reply.set(header::CONTENT_LENGTH, 0);
                return reply;
            }
            Some(ByteRange::Satisfiable(range)) => {
                let content_range = format!("bytes {}-{}/{len}", range.start, range.end - 1);
                reply.set(header::CONTENT_RANGE, content_range);
                representation.source.slice(range)
            }
        };
        reply.set_body(body, representation.route, is_get);
        reply
    }

    fn record(&mut self, parts: &Parts, route: Route, status: StatusCode) {
        self.stats.count(route, status.as_u16());
        self.log.push(ApiRequest {
            at: self.started.elapsed(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers: header_pairs(&parts.headers),
            status: status.as_u16(),
            route,
        });
    }
}

/// Whether `anthropic-beta` (comma-joined, possibly repeated) names the Files API beta.
fn files_beta(headers: &HeaderMap) -> bool {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|beta| beta.trim() == FILES_BETA)
}

/// A page in the GA shape.
#[derive(Serialize)]
struct GaPageBody<T> {
    data: Vec<T>,
    next_page: Option<String>,
}

/// `{"type":"error","error":{"type":..,"message":..},"request_id":..}`
#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    envelope_type: &'static str,
    error: ErrorObject<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    error_type: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<ErrorDetails>,
}

/// `{"error_code": ..}`
#[derive(Serialize)]
struct ErrorDetails {
    error_code: &'static str,
}

fn to_json(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("mock objects serialise"))
}

/// Bytes served with range support: file content or batch results.
struct Representation {
    source: BodySource,
    content_type: &'static str,
    validators: Validators,
    route: Route,
}

impl Representation {
    /// `ETag`, `Last-Modified` and `Accept-Ranges`.
    fn describe(&self, reply: &mut Reply) {
        reply.set(header::ETAG, &self.validators.etag);
        let modified = httpdate::fmt_http_date(self.validators.last_modified.to_system_time());
        reply.set(header::LAST_MODIFIED, modified);
        reply.set(header::ACCEPT_RANGES, "bytes");
    }
}

/// A response decided under the state lock, turned into an HTTP response after it is released.
type Reply = crate::http::reply::Reply<ReplyBody>;

#[derive(Debug, Default)]
enum ReplyBody {
    #[default]
    Empty,
    /// An error envelope: not counted, never cut.
    Plain(Bytes),
    /// A successful body: counted, and subject to body faults.
    Counted(CountedBody),
}

impl Reply {
    /// `200` with a JSON body.
    fn json(route: Route, body: Bytes, is_get: bool) -> Self {
        let mut reply = Reply::new(StatusCode::OK);
        reply.set(header::CONTENT_TYPE, JSON);
        reply.set_body(BodySource::Bytes(body), route, is_get);
        reply
    }

    /// The error envelope, with `retry-after` when the error has one.
    fn error(error: &ApiError, request_id: &str) -> Self {
        let body = to_json(&ErrorEnvelope {
            envelope_type: "error",
            error: ErrorObject {
                error_type: error.error_type(),
                message: &error.message,
                details: error
                    .error_code
                    .map(|error_code| ErrorDetails { error_code }),
            },
            request_id,
        });
        let mut reply = Reply::new(error.status);
        reply.set(header::CONTENT_TYPE, JSON);
        reply.set(header::CONTENT_LENGTH, body.len());
        if let Some(secs) = error.retry_after_secs {
            reply.set(header::RETRY_AFTER, secs);
        }
        reply.body = ReplyBody::Plain(body);
        reply
    }

    /// `Content-Length` and, for `GET`, the counted body.
    fn set_body(&mut self, source: BodySource, route: Route, is_get: bool) {
        self.set(header::CONTENT_LENGTH, source.len());
        if is_get {
            self.body = ReplyBody::Counted(CountedBody::complete(source, route));
        }
    }

    fn into_response(self, shared: &Arc<Shared>, flushes: Flushes) -> Response {
        self.respond(|body| match body {
            ReplyBody::Empty => Body::empty(),
            ReplyBody::Plain(bytes) => Body::from(bytes),
            ReplyBody::Counted(body) => Body::from_stream(body.into_stream(shared, flushes)),
        })
    }
}
