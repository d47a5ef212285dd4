//! `If-Range` validators of the API's byte representations (file content, batch results); the
//! range handling itself is [`crate::http::range`]'s.

use axum::http::HeaderMap;

use super::clock::Timestamp;
use crate::http::range::{self, ByteRange};

/// The validators of a representation, for `If-Range`.
#[derive(Debug, Clone)]
pub(super) struct Validators {
    pub(super) etag: String,
    pub(super) last_modified: Timestamp,
}

/// The range to honour for a representation of `len` bytes: `None` means "send it all"
/// (no `Range`, a malformed or multiple one, or an `If-Range` that no longer matches).
pub(super) fn requested_range(
    headers: &HeaderMap,
    validators: &Validators,
    len: u64,
) -> Option<ByteRange> {
    range::requested_range(headers, len, |validator| {
        let last_modified = validators.last_modified.to_system_time();
        range::if_range_matches(validator, Some(&validators.etag), Some(last_modified))
    })
}
