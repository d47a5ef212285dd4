use std::time::Duration;

/// A failed HTTP exchange. URLs are always redacted (see [`super::redact`]).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("could not build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("request to {url} failed: {}", describe(source))]
    Send {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading the body from {url} failed: {}", describe(source))]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("no data from {url} for {idle:?} (read timeout); the connection stalled")]
    Stalled { url: String, idle: Duration },
    #[error("{url} redirected without a Location header (status {status})")]
    RedirectWithoutLocation { url: String, status: u16 },
    #[error("{url} redirected to an invalid location")]
    BadRedirect { url: String },
    #[error("too many redirects starting at {url} (more than {limit})")]
    TooManyRedirects { url: String, limit: usize },
    /// The process stopped sending requests (the spend cap): not retryable.
    #[error("not sending {url}: {reason}")]
    Halted { url: String, reason: String },
}

impl HttpError {
    /// Whether a new attempt may succeed: decided in [`super::retry::transient`].
    pub fn is_transient(&self) -> bool {
        super::retry::transient(self)
    }

    /// Whether the server's TLS certificate was rejected (unknown issuer, expired, wrong name).
    pub fn is_certificate(&self) -> bool {
        let (HttpError::Send { source, .. } | HttpError::Body { source, .. }) = self else {
            return false;
        };
        // `io::Error::source` skips the error it wraps: look at that one too (at any depth).
        let mut pending: Vec<&(dyn std::error::Error + 'static)> = vec![source];
        while let Some(error) = pending.pop() {
            if is_rustls_certificate(error) {
                return true;
            }
            if let Some(inner) = error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                pending.push(inner);
            }
            pending.extend(error.source());
        }
        false
    }
}

fn is_rustls_certificate(error: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        error.downcast_ref::<rustls::Error>(),
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
        )
    )
}

/// reqwest's Display stops at "error sending request"; the cause is further down the chain.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.without_url_ref().to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    /// The error's own text without the URL it may embed (which could carry a signed query).
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text
                .replace(&format!(" ({url})"), "")
                .replace(url.as_str(), "<url>");
        }
        text
    }
}
