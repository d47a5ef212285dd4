use std::time::SystemTime;

use reqwest::Response;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use url::Url;

use super::types::{Batch, FileObject, Page};
use super::{API_VERSION, ApiError};
use crate::config::{self, Layer, Settings};
use crate::engine::response::request_id;
use crate::http::HttpClient;
use crate::http::redact::redact_url;
use crate::http::retry::{RetryDecision, RetryPolicy, full_jitter, server_wait};

/// The beta flag that selects the Files API's `after_id` pagination.
pub const FILES_BETA: &str = "files-api-2025-04-14";

/// The API key; its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
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
    /// Base URL from `base_url`, else `ANTHROPIC_BASE_URL`, else the public API; key from
    /// `ANTHROPIC_API_KEY` (never from the command line). No config file is read.
    pub fn from_env(base_url: Option<&str>, pagination: Pagination) -> Result<ApiConfig, ApiError> {
        let flags = Layer {
            base_url: base_url.map(str::to_owned),
            ..Layer::default()
        };
        let settings = config::resolve(&flags, |name| std::env::var(name).ok(), None);
        ApiConfig::from_settings(&settings, pagination)
    }

    /// Base URL and key from resolved [`Settings`] (command line, environment, config file).
    pub fn from_settings(
        settings: &Settings,
        pagination: Pagination,
    ) -> Result<ApiConfig, ApiError> {
        let key = settings.api_key.as_ref().ok_or(ApiError::MissingKey)?;
        let key = ApiKey::new(key.value.expose());
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
        if let Ok(mut key) = HeaderValue::from_str(&self.key.0) {
            key.set_sensitive(true);
            headers.insert("x-api-key", key);
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Page(String),
    AfterId(String),
}

/// Typed access to the Claude API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: HttpClient,
    config: ApiConfig,
}

impl ApiClient {
    pub fn new(http: HttpClient, config: ApiConfig) -> ApiClient {
        ApiClient { http, config }
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

    /// One page of files, newest first, and where the next one starts.
    pub async fn list_files(
        &self,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<(Vec<FileObject>, Option<Cursor>), ApiError> {
        let mut url = self.endpoint(&["v1", "files"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(cursor) = cursor {
            let (name, value) = match cursor {
                Cursor::Page(page) => ("page", page),
                Cursor::AfterId(id) => ("after_id", id),
            };
            url.query_pairs_mut().append_pair(name, value);
        }
        let page: Page<FileObject> = self.get_json(url).await?;
        Ok(split_page(page))
    }

    pub async fn file(&self, id: &str) -> Result<FileObject, ApiError> {
        checked(id, "a file")?;
        self.get_json(self.endpoint(&["v1", "files", id])).await
    }

    pub fn file_content_url(&self, id: &str) -> Url {
        self.endpoint(&["v1", "files", id, "content"])
    }

    /// One page of batches, newest first, and where the next one starts.
    pub async fn list_batches(
        &self,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<(Vec<Batch>, Option<Cursor>), ApiError> {
        let mut url = self.endpoint(&["v1", "messages", "batches"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(Cursor::AfterId(id) | Cursor::Page(id)) = cursor {
            url.query_pairs_mut().append_pair("after_id", id);
        }
        let page: Page<Batch> = self.get_json(url).await?;
        Ok(split_page(page))
    }

    pub async fn batch(&self, id: &str) -> Result<Batch, ApiError> {
        checked(id, "a batch")?;
        self.get_json(self.endpoint(&["v1", "messages", "batches", id]))
            .await
    }

    /// Where a batch's results are: its `results_url`, absolute or relative to the base URL.
    pub fn results_url(&self, batch: &Batch) -> Option<Url> {
        let raw = batch.results_url.as_deref()?;
        Url::parse(raw)
            .ok()
            .or_else(|| self.config.base_url.join(raw).ok())
    }

    /// GET a JSON document, retrying what is worth retrying.
    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, ApiError> {
        let headers = self.headers();
        let mut failures = 0;
        // The retry-storm guard's place, held until the retried request is answered.
        let mut _retrying = None;
        loop {
            let (error, wait) = match self.http.get(&url, &headers).await {
                Ok(response) if response.status().is_success() => {
                    return decode(&url, response).await;
                }
                Ok(response) => match api_failure(&url, response).await {
                    Attempt::Final(error) => return Err(error),
                    Attempt::Retry(error, wait) => (error, wait),
                },
                Err(error) if error.is_transient() => (ApiError::Http(error), None),
                Err(error) => return Err(ApiError::Http(error)),
            };
            failures += 1;
            let policy = if error.is_overload() {
                self.config.retry.for_overload()
            } else {
                self.config.retry
            };
            match policy.decide(failures, wait, full_jitter) {
                RetryDecision::RetryAfter(delay) => {
                    let slot = self.http.governor().retry_slot().await;
                    tracing::debug!(event = "retry", url = %redact_url(&url), failures, delay_ms = delay.as_millis() as u64, %error, "retrying API call");
                    tokio::time::sleep(delay).await;
                    _retrying = Some(slot);
                }
                RetryDecision::GiveUp => {
                    let url = redact_url(&url);
                    return Err(ApiError::RetriesExhausted {
                        url,
                        attempts: failures,
                        last: Box::new(error),
                    });
                }
            }
        }
    }
}

/// `id` if it is one safe path segment ([`super::check_id`]).
fn checked(id: &str, what: &'static str) -> Result<(), ApiError> {
    super::check_id(id).map_err(|reason| ApiError::BadId { what, reason })
}

fn split_page<T>(page: Page<T>) -> (Vec<T>, Option<Cursor>) {
    let next = match (page.next_page, page.has_more, page.last_id) {
        (Some(page), _, _) => Some(Cursor::Page(page)),
        (None, Some(true), Some(last)) => Some(Cursor::AfterId(last)),
        _ => None,
    };
    (page.data, next)
}

async fn decode<T: DeserializeOwned>(url: &Url, response: Response) -> Result<T, ApiError> {
    let request_id = request_id(response.headers());
    let body = response.bytes().await.map_err(|source| {
        ApiError::Http(crate::http::HttpError::Body {
            url: redact_url(url),
            source,
        })
    })?;
    serde_json::from_slice(&body).map_err(|source| ApiError::Decode {
        url: redact_url(url),
        request_id,
        source,
    })
}

enum Attempt {
    Retry(ApiError, Option<std::time::Duration>),
    Final(ApiError),
}

/// Read the error envelope and decide whether the call may be retried.
async fn api_failure(url: &Url, response: Response) -> Attempt {
    let status = response.status().as_u16();
    let request_id = request_id(response.headers());
    let wait = server_wait(response.headers(), SystemTime::now());
    let should_retry = response
        .headers()
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(|v| v == "true");
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
    let retryable = should_retry.unwrap_or(matches!(status, 408 | 409 | 429) || status >= 500);
    if retryable {
        Attempt::Retry(error, wait)
    } else {
        Attempt::Final(error)
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

    #[test]
    fn either_page_shape_yields_the_next_cursor() {
        let ga = Page::<u8> {
            data: vec![],
            next_page: Some("page_2".into()),
            has_more: None,
            last_id: None,
        };
        assert_eq!(split_page(ga).1, Some(Cursor::Page("page_2".into())));
        let beta = Page::<u8> {
            data: vec![],
            next_page: None,
            has_more: Some(true),
            last_id: Some("f".into()),
        };
        assert_eq!(split_page(beta).1, Some(Cursor::AfterId("f".into())));
        let last = Page::<u8> {
            data: vec![],
            next_page: None,
            has_more: Some(false),
            last_id: Some("f".into()),
        };
        assert_eq!(split_page(last).1, None);
    }
}
