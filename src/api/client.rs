use std::time::{Duration, SystemTime};

use reqwest::Response;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use url::Url;

use super::pages::{Listed, Pages};
use super::types::{Batch, FileObject};
use super::{API_VERSION, ApiError};
use crate::config::Settings;
use tokio_util::sync::CancellationToken;

use crate::http::HttpClient;
use crate::http::redact::redact_url;
use crate::http::request_id::request_id;
use crate::http::retry::{Failed, Retrier, RetryPolicy, StatusClass, Stop, classify, server_wait};

/// The beta flag that selects the Files API's `after_id` pagination.
pub const FILES_BETA: &str = "files-api-2025-04-14";

/// The credential: an API key (sent as `x-api-key`) or a bearer token (`Authorization:
/// Bearer`, from `ANTHROPIC_AUTH_TOKEN`); its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey(String, KeyKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    ApiKey,
    Bearer,
}

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into(), KeyKind::ApiKey)
    }

    /// A bearer token (`Authorization: Bearer …`).
    pub fn bearer(token: impl Into<String>) -> ApiKey {
        ApiKey(token.into(), KeyKind::Bearer)
    }

    /// The header that carries it, marked sensitive (never logged).
    fn header(&self) -> Option<(&'static str, HeaderValue)> {
        let (name, value) = match self.1 {
            KeyKind::ApiKey => ("x-api-key", HeaderValue::from_str(&self.0)),
            KeyKind::Bearer => (
                "authorization",
                HeaderValue::from_str(&format!("Bearer {}", self.0)),
            ),
        };
        let mut value = value.ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(REDACTED)")
    }
}

/// Which Files pagination to use: GA (`page`/`next_page`) or beta (`after_id`/`has_more`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pagination {
    #[default]
    Ga,
    Beta,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub base_url: Url,
    pub key: ApiKey,
    pub pagination: Pagination,
    pub retry: RetryPolicy,
}

impl ApiConfig {
    /// Base URL and key from resolved [`Settings`] (command line, environment, config file).
    pub fn from_settings(
        settings: &Settings,
        pagination: Pagination,
    ) -> Result<ApiConfig, ApiError> {
        // As the SDKs: the API key wins when both are set.
        let key = match (&settings.api_key, &settings.auth_token) {
            (Some(key), _) => ApiKey::new(key.value.expose()),
            (None, Some(token)) => ApiKey::bearer(token.value.expose()),
            (None, None) => return Err(ApiError::MissingKey),
        };
        ApiConfig::new(&settings.base_url.value, key, pagination)
    }

    pub fn new(base_url: &str, key: ApiKey, pagination: Pagination) -> Result<ApiConfig, ApiError> {
        let base = Url::parse(base_url).map_err(|_| ApiError::BadBaseUrl(base_url.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ApiError::BadBaseUrl(base_url.to_owned()));
        }
        Ok(ApiConfig {
            base_url: base,
            key,
            pagination,
            retry: RetryPolicy::default(),
        })
    }
}

impl ApiConfig {
    /// The headers every API request carries (the key marked sensitive).
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some((name, value)) = self.key.header() {
            headers.insert(name, value);
        }
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        if self.pagination == Pagination::Beta {
            headers.insert("anthropic-beta", HeaderValue::from_static(FILES_BETA));
        }
        headers
    }

    /// The API headers for `url` when it is on the API's origin; none elsewhere, so the key
    /// never reaches another host (e.g. a results URL or a plain `get` URL).
    pub fn headers_for(&self, url: &Url) -> HeaderMap {
        if url.origin() == self.base_url.origin() {
            self.headers()
        } else {
            HeaderMap::new()
        }
    }
}

/// A page position: GA's opaque `page` cursor or beta's `after_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cursor {
    Page(String),
    AfterId(String),
}

/// Typed access to the Claude API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: HttpClient,
    config: ApiConfig,
    cancel: CancellationToken,
}

impl ApiClient {
    pub fn new(http: HttpClient, config: ApiConfig) -> ApiClient {
        ApiClient {
            http,
            config,
            cancel: CancellationToken::new(),
        }
    }

    /// Share `token` (e.g. the engine's): cancelling it ends a call waiting to retry.
    pub fn with_cancel_token(mut self, token: CancellationToken) -> ApiClient {
        self.cancel = token;
        self
    }

    /// Cancelling this token ends a call waiting to retry ([`ApiError::Cancelled`]).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The HTTP client (and through it the process's governor).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    pub fn base_url(&self) -> &Url {
        &self.config.base_url
    }

    /// The headers every API request carries (the key marked sensitive).
    pub fn headers(&self) -> HeaderMap {
        self.config.headers()
    }

    /// [`Self::headers`] for a request to `url` on the API's origin; none for another origin.
    pub fn headers_for(&self, url: &Url) -> HeaderMap {
        self.config.headers_for(url)
    }

    /// `base/segments…`, each segment percent-encoded (ids may come from the command line).
    pub fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.config.base_url.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have paths")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// The pages of a list endpoint (files or batches), `limit` items each, newest first; a
    /// listing that loops is stopped (see [`Pages`]).
    pub fn pages<T: Listed>(&self, limit: u32) -> Pages<'_, T> {
        Pages::new(self, limit)
    }

    pub async fn file(&self, id: &str) -> Result<FileObject, ApiError> {
        checked(id, "a file")?;
        let (file, _) = self.get_json(self.endpoint(&["v1", "files", id])).await?;
        Ok(file)
    }

    pub fn file_content_url(&self, id: &str) -> Url {
        self.endpoint(&["v1", "files", id, "content"])
    }

    pub async fn batch(&self, id: &str) -> Result<Batch, ApiError> {
        checked(id, "a batch")?;
        let (batch, _) = self
            .get_json(self.endpoint(&["v1", "messages", "batches", id]))
            .await?;
        Ok(batch)
    }

    /// Where a batch's results are: its `results_url`, absolute or relative to the base URL.
    pub fn results_url(&self, batch: &Batch) -> Option<Url> {
        let raw = batch.results_url.as_deref()?;
        Url::parse(raw)
            .ok()
            .or_else(|| self.config.base_url.join(raw).ok())
    }

    /// GET a JSON document, retrying what is worth retrying; with the answer's request-id.
    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
    ) -> Result<(T, Option<String>), ApiError> {
        let headers = self.headers();
        let redacted = redact_url(&url);
        let governor = self.http.governor();
        let mut retrier = Retrier::new(self.config.retry, governor, &self.cancel, &redacted);
        loop {
            let (error, server_wait) = match self.attempt(&url, &headers).await {
                Attempt::Answered(response) => return decode(&url, response).await,
                Attempt::Final(error) => return Err(error),
                Attempt::Retry(error, wait) => (error, wait),
            };
            let failed = Failed {
                reason: &error,
                overload: error.is_overload(),
                server_wait,
                kept: 0,
                range: None,
            };
            match retrier.wait(failed, |_, _| {}).await {
                Ok(()) => {}
                Err(Stop::GaveUp { attempts }) => {
                    return Err(ApiError::RetriesExhausted {
                        url: redacted,
                        attempts,
                        last: Box::new(error),
                    });
                }
                Err(Stop::Cancelled) => return Err(ApiError::Cancelled),
            }
        }
    }

    /// One request.
    async fn attempt(&self, url: &Url, headers: &HeaderMap) -> Attempt {
        match self.http.get(url, headers).await {
            Ok(response) if response.status().is_success() => Attempt::Answered(response),
            Ok(response) => api_failure(url, response).await,
            Err(error) if error.is_transient() => Attempt::Retry(ApiError::Http(error), None),
            Err(error) => Attempt::Final(ApiError::Http(error)),
        }
    }
}

/// `id` if it is one safe path segment ([`super::check_id`]).
fn checked(id: &str, what: &'static str) -> Result<(), ApiError> {
    super::check_id(id).map_err(|reason| ApiError::BadId { what, reason })
}

async fn decode<T: DeserializeOwned>(
    url: &Url,
    response: Response,
) -> Result<(T, Option<String>), ApiError> {
    let request_id = request_id(response.headers());
    let body = response.bytes().await.map_err(|source| {
        ApiError::Http(crate::http::HttpError::Body {
            url: redact_url(url),
            source,
        })
    })?;
    match serde_json::from_slice(&body) {
        Ok(value) => Ok((value, request_id)),
        Err(source) => Err(ApiError::Decode {
            url: redact_url(url),
            request_id,
            source,
        }),
    }
}

/// How one request went.
enum Attempt {
    Answered(Response),
    /// Worth another attempt, after the wait the server asked for (if any).
    Retry(ApiError, Option<Duration>),
    Final(ApiError),
}

/// Read the error envelope and decide whether the call may be retried.
async fn api_failure(url: &Url, response: Response) -> Attempt {
    let status = response.status().as_u16();
    let request_id = request_id(response.headers());
    let wait = server_wait(response.headers(), SystemTime::now());
    let class = classify(status, response.headers());
    let body = response.bytes().await.unwrap_or_default();
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let error = &envelope["error"];
    let error_type = error["type"].as_str().unwrap_or("api_error").to_owned();
    let message = error["message"]
        .as_str()
        .unwrap_or("(no message)")
        .to_owned();
    let request_id = request_id.or_else(|| envelope["request_id"].as_str().map(str::to_owned));
    let error = ApiError::Api {
        status,
        error_type,
        message,
        request_id,
        url: redact_url(url),
    };
    match class {
        StatusClass::Final => Attempt::Final(error),
        StatusClass::Retry | StatusClass::Overload => Attempt::Retry(error, wait),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> ApiClient {
        let http = HttpClient::new(&Default::default()).unwrap();
        ApiClient::new(
            http,
            ApiConfig::new(base, ApiKey::new("sk-test"), Pagination::Ga).unwrap(),
        )
    }

    #[test]
    fn endpoints_keep_a_base_path_and_encode_ids() {
        let api = client("https://proxy.example/anthropic/");
        assert_eq!(
            api.endpoint(&["v1", "files"]).as_str(),
            "https://proxy.example/anthropic/v1/files"
        );
        assert_eq!(
            api.file_content_url("file_1/../x").as_str(),
            "https://proxy.example/anthropic/v1/files/file_1%2F..%2Fx/content"
        );
    }

    #[test]
    fn results_urls_may_be_relative_or_absolute() {
        let api = client("http://127.0.0.1:9");
        let mut batch: Batch = serde_json::from_str(
            r#"{"id":"b","processing_status":"ended","created_at":"x","results_url":"/v1/messages/batches/b/results"}"#,
        )
        .unwrap();
        assert_eq!(
            api.results_url(&batch).unwrap().as_str(),
            "http://127.0.0.1:9/v1/messages/batches/b/results"
        );
        batch.results_url = Some("https://files.example/r.jsonl".into());
        assert_eq!(
            api.results_url(&batch).unwrap().as_str(),
            "https://files.example/r.jsonl"
        );
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let config =
            ApiConfig::new("http://x", ApiKey::new("sk-ant-secret"), Pagination::Ga).unwrap();
        assert!(!format!("{config:?}").contains("sk-ant-secret"));
    }
}
