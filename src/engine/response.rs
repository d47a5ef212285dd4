//! Judging a response before any of its bytes are written: is it the part we asked for, the
//! whole file, a sign that the file changed, a reason to retry, or a failure?

use std::ops::Range;
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap};
use reqwest::{Response, StatusCode};

use super::TransferError;
use crate::http::range::ContentRange;
use crate::http::request_id::request_id;
use crate::http::retry::{self, StatusClass};

/// What identifies one version of the remote file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn from_headers(headers: &HeaderMap) -> Validators {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Validators {
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
        }
    }

    /// Whether `other` (from a later response) names a different version than `self`.
    pub fn differ(&self, other: &Validators) -> bool {
        match (&self.etag, &other.etag) {
            (Some(ours), Some(theirs)) => ours != theirs,
            _ => match (&self.last_modified, &other.last_modified) {
                (Some(ours), Some(theirs)) => ours != theirs,
                _ => false,
            },
        }
    }

    /// What to send in `If-Range`: a strong ETag, else Last-Modified.
    pub fn if_range(&self) -> Option<&str> {
        let strong = self.etag.as_deref().filter(|tag| !tag.starts_with("W/"));
        strong.or(self.last_modified.as_deref())
    }
}

/// Why an attempt at some bytes did not complete, sorted by what happens next.
#[derive(Debug)]
pub enum Failure {
    /// Worth another attempt (after `server_wait`, when the server asked for one).
    Retry {
        error: TransferError,
        server_wait: Option<Duration>,
    },
    /// The server cannot be trusted with ranges: start over with one plain stream.
    Untrustworthy(String),
    /// The file changed on the server: the partial data is stale, start over.
    Changed,
    /// Final for this transfer.
    Fatal(TransferError),
}

/// The verdict on an answer to a ranged request.
#[derive(Debug)]
pub enum RangedReply {
    /// 206 with exactly the bytes asked for.
    Partial { range: Range<u64>, total: u64 },
    /// 200: the whole file (the server ignores ranges, or `If-Range` failed).
    Whole,
    /// 416: nothing at that offset (the file shrank, or it is empty).
    Unsatisfiable { total: Option<u64> },
    /// The response is not trustworthy for ranges: fall back to one plain stream.
    Untrustworthy(String),
}

/// Turn a non-success status into a failure, retryable as [`retry::classify`] says.
pub fn status_failure(url: &str, response: &Response) -> Failure {
    let status = response.status().as_u16();
    let headers = response.headers();
    let error = TransferError::Status {
        url: url.to_owned(),
        status,
        request_id: request_id(headers),
    };
    match retry::classify(status, headers) {
        StatusClass::Final => Failure::Fatal(error),
        StatusClass::Retry | StatusClass::Overload => Failure::Retry {
            error,
            server_wait: retry::server_wait(headers, SystemTime::now()),
        },
    }
}

/// A server that announces a size other than the one the caller knows (the Files API's
/// `size_bytes`) is lying one way or the other: the transfer stops, nothing is trusted.
pub fn size_mismatch(url: &str, expected: Option<u64>, announced: Option<u64>) -> Option<Failure> {
    match (expected, announced) {
        (Some(expected), Some(actual)) if expected != actual => {
            Some(Failure::Fatal(TransferError::LengthMismatch {
                url: url.to_owned(),
                expected,
                actual,
                kept: false,
            }))
        }
        _ => None,
    }
}

/// Judge the answer to `Range: bytes=start-` (`end == None`) or `bytes=start-(end-1)`.
pub fn judge_ranged(
    url: &str,
    response: &Response,
    start: u64,
    end: Option<u64>,
) -> Result<RangedReply, Failure> {
    let headers = response.headers();
    match response.status() {
        StatusCode::PARTIAL_CONTENT => Ok(judge_partial(headers, start, end)),
        StatusCode::OK => Ok(RangedReply::Whole),
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let total = content_range(headers).and_then(|range| match range {
                ContentRange::Unsatisfied { total } => Some(total),
                ContentRange::Bytes { total, .. } => total,
            });
            Ok(RangedReply::Unsatisfiable { total })
        }
        _ => Err(status_failure(url, response)),
    }
}

fn judge_partial(headers: &HeaderMap, start: u64, end: Option<u64>) -> RangedReply {
    let untrustworthy = |reason: &str| RangedReply::Untrustworthy(reason.to_owned());
    let encoding = headers.get(header::CONTENT_ENCODING);
    if encoding.is_some_and(|encoding| encoding.as_bytes() != b"identity") {
        return untrustworthy("a ranged response was content-encoded");
    }
    let Some(ContentRange::Bytes {
        start: first,
        end: last,
        total: Some(total),
    }) = content_range(headers)
    else {
        return untrustworthy("206 without a usable Content-Range");
    };
    let expected_end = end.unwrap_or(total).min(total);
    if first != start || last != expected_end {
        return untrustworthy(&format!(
            "asked for bytes {start}-{}, Content-Range says {first}-{}",
            expected_end.saturating_sub(1),
            last - 1
        ));
    }
    if content_length(headers).is_some_and(|length| length != last - first) {
        return untrustworthy("Content-Length disagrees with Content-Range");
    }
    RangedReply::Partial {
        range: first..last,
        total,
    }
}

fn content_range(headers: &HeaderMap) -> Option<ContentRange> {
    ContentRange::parse(headers.get(header::CONTENT_RANGE)?.to_str().ok()?)
}

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn accepts_exactly_the_requested_range() {
        let h = headers(&[
            ("content-range", "bytes 10-19/100"),
            ("content-length", "10"),
        ]);
        assert!(matches!(
            judge_partial(&h, 10, Some(20)),
            RangedReply::Partial { total: 100, .. }
        ));
        let open = headers(&[("content-range", "bytes 10-99/100")]);
        assert!(matches!(
            judge_partial(&open, 10, None),
            RangedReply::Partial { .. }
        ));
    }

    #[test]
    fn rejects_shifted_missing_or_encoded_ranges() {
        let shifted = headers(&[("content-range", "bytes 11-20/100")]);
        let unknown_total = headers(&[("content-range", "bytes 10-19/*")]);
        let gzip = headers(&[
            ("content-range", "bytes 10-19/100"),
            ("content-encoding", "gzip"),
        ]);
        let wrong_length = headers(&[
            ("content-range", "bytes 10-19/100"),
            ("content-length", "9"),
        ]);
        for h in [shifted, unknown_total, gzip, wrong_length, HeaderMap::new()] {
            assert!(
                matches!(
                    judge_partial(&h, 10, Some(20)),
                    RangedReply::Untrustworthy(_)
                ),
                "{h:?}"
            );
        }
    }

    #[test]
    fn validators_differ_only_on_real_evidence() {
        let a = Validators {
            etag: Some("\"a\"".into()),
            last_modified: None,
        };
        let b = Validators {
            etag: Some("\"b\"".into()),
            last_modified: None,
        };
        assert!(a.differ(&b));
        assert!(!a.differ(&a));
        assert!(!a.differ(&Validators::default()));
        let lm1 = Validators {
            etag: None,
            last_modified: Some("x".into()),
        };
        let lm2 = Validators {
            etag: None,
            last_modified: Some("y".into()),
        };
        assert!(lm1.differ(&lm2));
    }
}
