//! Single byte ranges (`bytes=a-b`, `bytes=a-`, `bytes=-n`) and `If-Range`.
//!
//! Multiple ranges, other units and malformed values are ignored (the full representation is
//! sent), as is a `Range` whose `If-Range` no longer names the representation.

use std::ops::Range;
use std::time::SystemTime;

use axum::http::{HeaderMap, header};
use httpdate::HttpDate;

/// A parsed single-range `Range: bytes=...` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `bytes=a-b`
    FromTo(u64, u64),
    /// `bytes=a-`
    From(u64),
    /// `bytes=-n`
    Suffix(u64),
}

/// A requested range resolved against the representation length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ByteRange {
    Satisfiable(Range<u64>),
    Unsatisfiable,
}

/// The range to honour for a representation of `len` bytes: `None` means "send it all" (no
/// `Range`, a malformed or multiple one, or an `If-Range` for which `if_range_matches` says
/// the representation changed).
pub(crate) fn requested_range(
    headers: &HeaderMap,
    len: u64,
    if_range_matches: impl FnOnce(&str) -> bool,
) -> Option<ByteRange> {
    let spec = parse_range(headers.get(header::RANGE)?.to_str().ok()?)?;
    if let Some(validator) = headers.get(header::IF_RANGE) {
        let still_valid = validator.to_str().is_ok_and(if_range_matches);
        if !still_valid {
            return None;
        }
    }
    Some(spec.resolve(len))
}

/// Whether an `If-Range` value still names a representation with these validators: a strong,
/// exact `ETag` match, or exactly the `Last-Modified` date.
pub(crate) fn if_range_matches(
    validator: &str,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    let validator = validator.trim();
    if validator.starts_with('"') || validator.starts_with("W/") {
        return !validator.starts_with("W/") && etag == Some(validator);
    }
    match (last_modified, httpdate::parse_http_date(validator)) {
        (Some(modified), Ok(date)) => HttpDate::from(modified) == HttpDate::from(date),
        _ => false,
    }
}

/// Parses a single byte range; multiple ranges, other units and malformed values give `None`
/// (such a `Range` header is ignored).
fn parse_range(value: &str) -> Option<RangeSpec> {
    let (unit, spec) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    match (first.trim(), last.trim()) {
        ("", "") => None,
        ("", last) => Some(RangeSpec::Suffix(parse_position(last)?)),
        (first, "") => Some(RangeSpec::From(parse_position(first)?)),
        (first, last) => {
            let (first, last) = (parse_position(first)?, parse_position(last)?);
            (first <= last).then_some(RangeSpec::FromTo(first, last))
        }
    }
}

/// Digits only (`u64::from_str` would also accept a leading `+`).
fn parse_position(digits: &str) -> Option<u64> {
    if digits.bytes().all(|byte| byte.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

impl RangeSpec {
    fn resolve(self, total: u64) -> ByteRange {
        let (start, end) = match self {
            RangeSpec::FromTo(first, last) => (first, last.saturating_add(1).min(total)),
            RangeSpec::From(first) => (first, total),
            RangeSpec::Suffix(len) => (total.saturating_sub(len), total),
        };
        if start >= end {
            // Covers `first >= total`, `bytes=-0` and any range of an empty representation.
            return ByteRange::Unsatisfiable;
        }
        ByteRange::Satisfiable(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parsing() {
        assert_eq!(parse_range("bytes=0-9"), Some(RangeSpec::FromTo(0, 9)));
        assert_eq!(parse_range("bytes=5-"), Some(RangeSpec::From(5)));
        assert_eq!(parse_range("bytes=-5"), Some(RangeSpec::Suffix(5)));
        assert_eq!(parse_range("bytes=9-0"), None);
        assert_eq!(parse_range("bytes=+1-2"), None);
        assert_eq!(parse_range("items=0-9"), None);
        assert_eq!(parse_range("bytes=-"), None);
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
    }

    #[test]
    fn range_resolution() {
        let resolve = |value| parse_range(value).unwrap().resolve(10);
        assert_eq!(resolve("bytes=0-99"), ByteRange::Satisfiable(0..10));
        assert_eq!(resolve("bytes=5-99"), ByteRange::Satisfiable(5..10));
        assert_eq!(resolve("bytes=-99"), ByteRange::Satisfiable(0..10));
        assert_eq!(resolve("bytes=-0"), ByteRange::Unsatisfiable);
        assert_eq!(resolve("bytes=10-"), ByteRange::Unsatisfiable);
    }
}
