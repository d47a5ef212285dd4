use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::HttpError;
use super::redact::{redact_url, same_origin};

const MAX_REDIRECTS: usize = 10;

/// Connection settings of the one client a process uses.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    pub user_agent: String,
    /// Idle connections kept per host (should be at least the connection cap).
    pub pool_per_host: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(30),
            user_agent: concat!("claudedl/", env!("CARGO_PKG_VERSION")).to_string(),
            pool_per_host: 64,
        }
    }
}

/// The process's HTTP client: HTTP/1.1 only (one TCP connection per range, so parallel ranges
/// really run in parallel), no automatic redirects, no `Referer`, no decompression.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
}

/// Headers that carry credentials and must stay with the origin they were meant for.
pub fn is_credential_header(name: &HeaderName) -> bool {
    const NAMED: [&str; 4] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
    ];
    const HINTS: [&str; 6] = ["auth", "token", "key", "secret", "signature", "session"];
    let name = name.as_str();
    NAMED.contains(&name) || HINTS.iter().any(|hint| name.contains(hint))
}

impl HttpClient {
    pub fn new(config: &ClientConfig) -> Result<HttpClient, HttpError> {
        let inner = reqwest::Client::builder()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_per_host)
            .tcp_nodelay(true)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(HttpError::Build)?;
        Ok(HttpClient { inner })
    }

    /// Send a GET, following redirects. `headers` go to the first origin and to any redirect
    /// target on the same origin; credential headers are dropped as soon as a redirect leaves it.
    pub async fn get(&self, url: &Url, headers: &HeaderMap) -> Result<Response, HttpError> {
        let mut current = url.clone();
        let mut headers = headers.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send_once(&current, &headers).await?;
            let Some(next) = redirect_target(&current, &response)? else {
                return Ok(response);
            };
            if !same_origin(&current, &next) {
                headers.retain_credentials_off();
            }
            current = next;
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

trait DropCredentials {
    fn retain_credentials_off(&mut self);
}

impl DropCredentials for HeaderMap {
    fn retain_credentials_off(&mut self) {
        let names: Vec<HeaderName> = self
            .keys()
            .filter(|name| is_credential_header(name))
            .cloned()
            .collect();
        for name in names {
            self.remove(name);
        }
    }
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
    fn credential_headers_are_recognised() {
        for name in [
            "authorization",
            "x-api-key",
            "cookie",
            "x-auth-token",
            "x-goog-signature",
        ] {
            assert!(
                is_credential_header(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        for name in ["accept", "user-agent", "anthropic-version", "range"] {
            assert!(
                !is_credential_header(&HeaderName::from_static(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn header_lines_parse() {
        let (name, value) = parse_header_line("X-Api-Key:  sk-123 ").unwrap();
        assert_eq!(name.as_str(), "x-api-key");
        assert_eq!(value, "sk-123");
        assert!(parse_header_line("no colon").is_none());
    }
}
