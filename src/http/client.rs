use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::HttpError;
use super::governor::{Governor, GovernorConfig, Ticket};
use super::redact::{redact_url, same_origin};

const MAX_REDIRECTS: usize = 10;
/// Immediate retries of one request on another endpoint after an overloaded answer.
const MAX_FAILOVERS: usize = 2;

/// Connection settings of the one client a process uses.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    pub user_agent: String,
    /// Idle connections kept per host (should be at least the connection cap).
    pub pool_per_host: usize,
    /// Pacing, pushback and failover for every request.
    pub governor: GovernorConfig,
    /// Let the given headers follow a redirect to another origin (`--location-trusted`, as
    /// curl); the API key never does.
    pub location_trusted: bool,
    /// CA certificates trusted besides the system's (`--cacert`).
    pub ca_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Accept any certificate (`--insecure`).
    pub insecure: bool,
    /// Proxy for every request (http, https, socks5, socks5h).
    pub proxy: Option<Url>,
    /// Bulk transfers may use HTTP/2 when a TLS server offers it (API calls always may).
    pub bulk_http2: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: crate::config::network::seconds(
                crate::config::defaults::CONNECT_TIMEOUT,
            ),
            user_agent: concat!("claudedl/", env!("CARGO_PKG_VERSION")).to_string(),
            pool_per_host: 64,
            governor: GovernorConfig::default(),
            location_trusted: false,
            ca_certificates: Vec::new(),
            insecure: false,
            proxy: None,
            bulk_http2: false,
        }
    }
}

/// The process's HTTP client: no automatic redirects, no `Referer`, no decompression. Bulk
/// transfers go over HTTP/1.1 (one TCP connection per range, so parallel ranges really run in
/// parallel) unless `bulk_http2`; API calls ([`HttpClient::for_api`]) use HTTP/2 when a TLS
/// server offers it. Every request passes the process's [`Governor`].
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    /// The client of API calls (HTTP/2 allowed), built when first asked for: building a
    /// client loads the system's CA certificates, and a run of plain URLs needs one client.
    api: Arc<ApiClientSlot>,
    governor: Arc<Governor>,
    location_trusted: bool,
    /// Whether `inner` may speak HTTP/2.
    http2: bool,
}

#[derive(Debug)]
struct ApiClientSlot {
    config: ClientConfig,
    client: std::sync::OnceLock<reqwest::Client>,
}

/// The spend-cap 429's error code.
const SPEND_LIMIT_CODE: &str = "enforced_spend_limit_reached";
/// Longest error body read to look for the spend-cap code.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The Claude API key: it never leaves the origin it was given for.
const API_KEY_HEADER: &str = "x-api-key";

/// Headers that shape a transfer rather than say who asks: they follow any redirect.
fn is_transfer_header(name: &HeaderName) -> bool {
    [
        header::RANGE,
        header::IF_RANGE,
        header::ACCEPT_ENCODING,
        header::ACCEPT,
    ]
    .contains(name)
}

/// The headers of a request redirected to another origin: those that shape the transfer; with
/// `trusted` (`--location-trusted`), every given header but the API key.
fn cross_origin_headers(headers: &HeaderMap, trusted: bool) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        if is_transfer_header(name) || (trusted && name.as_str() != API_KEY_HEADER) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

impl HttpClient {
    pub fn new(config: &ClientConfig) -> Result<HttpClient, HttpError> {
        let inner = build(config, config.bulk_http2)?;
        let api = ApiClientSlot {
            config: config.clone(),
            client: std::sync::OnceLock::new(),
        };
        if config.bulk_http2 {
            let _ = api.client.set(inner.clone());
        }
        Ok(HttpClient {
            inner,
            api: Arc::new(api),
            governor: Governor::new(config.governor.clone()),
            location_trusted: config.location_trusted,
            http2: config.bulk_http2,
        })
    }

    /// The same client (one governor, one budget, the same settings) with connections of its
    /// own, for another runtime: a pooled connection is driven by the runtime that opened it.
    pub fn for_lane(&self) -> Result<HttpClient, HttpError> {
        Ok(HttpClient {
            inner: build(&self.api.config, self.http2)?,
            ..self.clone()
        })
    }

    /// The same client (one governor, one budget) for API calls: HTTP/2 when offered.
    pub fn for_api(&self) -> Result<HttpClient, HttpError> {
        let api = match self.api.client.get() {
            Some(api) => api,
            None => {
                let built = build(&self.api.config, true)?;
                self.api.client.get_or_init(|| built)
            }
        };
        Ok(HttpClient {
            inner: api.clone(),
            http2: true,
            ..self.clone()
        })
    }

    /// The process's governor (budget, pauses, bandwidth cap, run summary).
    pub fn governor(&self) -> &Arc<Governor> {
        &self.governor
    }

    /// Send a GET, following redirects. `headers` go to the first origin and to any redirect
    /// target on the same origin; once a redirect leaves it, only the headers that shape the
    /// transfer (`Range`, `If-Range`, ...) go on, unless the client trusts redirects (and even
    /// then the API key stays behind).
    ///
    /// A request to the API's origin goes to the endpoint in use (see the governor); the
    /// response holds its place in flight until it is dropped.
    pub async fn get(&self, url: &Url, headers: &HeaderMap) -> Result<Response, HttpError> {
        let mut failovers = 0;
        loop {
            let (routed, endpoint) = self.governor.route(url);
            let response = self.follow(&routed, endpoint, headers).await?;
            // An overloaded answer that moved the process to another endpoint is retried there
            // at once: the failure belonged to the endpoint, not to the request.
            let overloaded = matches!(response.status().as_u16(), 503 | 529);
            if overloaded && endpoint.is_some() && failovers < MAX_FAILOVERS {
                let (_, now_in_use) = self.governor.route(url);
                if now_in_use != endpoint {
                    failovers += 1;
                    continue;
                }
            }
            return Ok(response);
        }
    }

    /// One request and its redirects.
    async fn follow(
        &self,
        url: &Url,
        endpoint: Option<usize>,
        headers: &HeaderMap,
    ) -> Result<Response, HttpError> {
        // Owned once a redirect changes them.
        let mut current = Cow::Borrowed(url);
        let mut headers = Cow::Borrowed(headers);
        for _ in 0..=MAX_REDIRECTS {
            let halted = |halted: super::Halted| HttpError::Halted {
                url: redact_url(&current),
                reason: halted.0,
            };
            let ticket = self.governor.admit(endpoint).await.map_err(halted)?;
            let response = self.send_once(&current, &headers).await?;
            let response = self.observe(ticket, &current, response).await?;
            let Some(next) = redirect_target(&current, &response)? else {
                return Ok(response);
            };
            drop(response);
            if !same_origin(&current, &next) {
                headers = Cow::Owned(cross_origin_headers(&headers, self.location_trusted));
            }
            current = Cow::Owned(next);
        }
        Err(HttpError::TooManyRedirects {
            url: redact_url(url),
            limit: MAX_REDIRECTS,
        })
    }

    async fn send_once(&self, url: &Url, headers: &HeaderMap) -> Result<Response, HttpError> {
        let mut headers = headers.clone();
        for value in headers.values_mut() {
            value.set_sensitive(true);
        }
        self.inner
            .request(Method::GET, url.clone())
            .headers(headers)
            .send()
            .await
            .map_err(|source| HttpError::Send {
                url: redact_url(url),
                source,
            })
    }
}

impl HttpClient {
    /// Tell the governor about the answer; a spend-cap 429 halts the process.
    async fn observe(
        &self,
        ticket: Ticket,
        url: &Url,
        response: Response,
    ) -> Result<Response, HttpError> {
        let status = response.status().as_u16();
        self.governor.observe(&ticket, status, response.headers());
        let mut response = if status == 429 && !response.headers().contains_key("retry-after") {
            self.check_spend_limit(url, response).await?
        } else {
            response
        };
        response
            .extensions_mut()
            .insert(Arc::new(ticket.into_slot()));
        Ok(response)
    }

    /// Read a 429's body (it has no `retry-after`): the spend cap halts the process, any other
    /// 429 is handed back as it came.
    async fn check_spend_limit(
        &self,
        url: &Url,
        response: Response,
    ) -> Result<Response, HttpError> {
        let status = response.status();
        let headers = response.headers().clone();
        let request_id = headers
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body = read_bounded(response, MAX_ERROR_BODY).await;
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if error["error"]["details"]["error_code"] == SPEND_LIMIT_CODE {
            let message = error["error"]["message"].as_str().unwrap_or("").to_owned();
            let reason = format!(
                "the organization's spend limit is reached (request-id {request_id}){}: raise it \
                 in the Claude Console, then run the same command again; progress is saved",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            );
            self.governor.halt(reason.clone());
            return Err(HttpError::Halted {
                url: redact_url(url),
                reason,
            });
        }
        let mut rebuilt = http::Response::new(body);
        *rebuilt.status_mut() = status;
        *rebuilt.headers_mut() = headers;
        Ok(Response::from(rebuilt))
    }
}

/// A reqwest client for `config`; HTTP/1.1 only unless `http2`.
fn build(config: &ClientConfig, http2: bool) -> Result<reqwest::Client, HttpError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(config.connect_timeout)
        .pool_max_idle_per_host(config.pool_per_host)
        .tcp_nodelay(true)
        .user_agent(config.user_agent.clone());
    builder = if config.insecure {
        builder.tls_danger_accept_invalid_certs(true)
    } else {
        builder.tls_backend_preconfigured(super::tls::client_config(&config.ca_certificates, http2))
    };
    if !http2 {
        // reqwest's own retries replay only HTTP/2's refusals (GOAWAY, REFUSED_STREAM), and
        // its default policy copies every request to be ready for one: none over HTTP/1.1.
        let no_replays = reqwest::retry::never().max_retries_per_request(0);
        builder = builder.http1_only().retry(no_replays);
    }
    if let Some(proxy) = &config.proxy {
        builder = builder.proxy(reqwest::Proxy::all(proxy.as_str()).map_err(HttpError::Build)?);
    }
    builder.build().map_err(HttpError::Build)
}

/// Up to `limit` bytes of a body (an error body: what could not be read is not needed).
async fn read_bounded(mut response: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(limit);
    body
}

/// Where a redirect response points, or `None` when the response is not a redirect.
fn redirect_target(current: &Url, response: &Response) -> Result<Option<Url>, HttpError> {
    let status = response.status();
    let is_redirect = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !is_redirect {
        return Ok(None);
    }
    let url = redact_url(current);
    let location =
        response
            .headers()
            .get(header::LOCATION)
            .ok_or(HttpError::RedirectWithoutLocation {
                url: url.clone(),
                status: status.as_u16(),
            })?;
    let location = location
        .to_str()
        .map_err(|_| HttpError::BadRedirect { url: url.clone() })?;
    let next = current
        .join(location)
        .map_err(|_| HttpError::BadRedirect { url })?;
    Ok(Some(next))
}

/// Build a header map from `Name: value` lines (as given to `-H`).
pub fn parse_header_line(line: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = line.split_once(':')?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    let value = HeaderValue::from_str(value.trim()).ok()?;
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_client_is_built_only_once_asked_for() {
        let http = HttpClient::new(&ClientConfig::default()).unwrap();
        assert!(
            http.api.client.get().is_none(),
            "plain URLs need one client"
        );
        let api = http.for_api().unwrap();
        assert!(http.api.client.get().is_some());
        api.for_api().unwrap();
        let bulk_http2 = ClientConfig {
            bulk_http2: true,
            ..ClientConfig::default()
        };
        let http = HttpClient::new(&bulk_http2).unwrap();
        assert!(
            http.api.client.get().is_some(),
            "an HTTP/2 bulk client serves the API too"
        );
    }

    #[test]
    fn only_transfer_headers_leave_the_origin_unless_trusted() {
        let mut given = HeaderMap::new();
        for (name, value) in [
            ("x-password", "s"),
            ("x-api-key", "sk-1"),
            ("authorization", "Bearer t"),
            ("range", "bytes=0-9"),
            ("if-range", "\"e\""),
        ] {
            given.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let names = |headers: HeaderMap| {
            let mut names: Vec<String> = headers.keys().map(|n| n.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(
            names(cross_origin_headers(&given, false)),
            ["if-range", "range"]
        );
        assert_eq!(
            names(cross_origin_headers(&given, true)),
            ["authorization", "if-range", "range", "x-password"]
        );
    }

    #[test]
    fn header_lines_parse() {
        let (name, value) = parse_header_line("X-Api-Key:  sk-123 ").unwrap();
        assert_eq!(name.as_str(), "x-api-key");
        assert_eq!(value, "sk-123");
        assert!(parse_header_line("no colon").is_none());
    }
}
