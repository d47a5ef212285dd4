//! Query strings and newest-first pagination by key: the GA cursor (`page`/`next_page`) and the
//! id-based shape (`before_id`/`after_id`, `has_more`/`first_id`/`last_id`).

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::ops::Range;

use serde::Serialize;

use super::ListingFault;
use super::clock::Timestamp;
use super::handler::ApiError;

/// Default and bounds of `limit`.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;
/// Prefix of the GA page cursors.
const CURSOR_PREFIX: &str = "page_";

/// The listing order of files and batches: newest first means descending keys (`created_at`,
/// then id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SortKey {
    pub(super) time: Timestamp,
    pub(super) id: String,
}

/// Something listed by key.
pub(super) trait Keyed {
    fn key(&self) -> &SortKey;
}

/// A collection that pages by key.
pub(super) trait Sequence {
    type Item: Keyed;
    /// Up to `n` items older than `key` (from the newest when `None`), newest first.
    fn older(&self, key: Option<&SortKey>, n: usize) -> Vec<Self::Item>;
    /// Up to `n` items newer than `key`, closest to it (oldest) first.
    fn newer(&self, key: &SortKey, n: usize) -> Vec<Self::Item>;
    /// The key of item `id`, if it exists.
    fn key_of(&self, id: &str) -> Option<SortKey>;
}

/// One page, newest first.
pub(super) struct Page<T> {
    pub(super) items: Vec<T>,
    pub(super) has_more: bool,
}

impl<T: Keyed> Page<T> {
    fn from_lookahead(mut items: Vec<T>, limit: usize) -> Self {
        let has_more = items.len() > limit;
        items.truncate(limit);
        Page { items, has_more }
    }

    pub(super) fn first_id(&self) -> Option<String> {
        self.items.first().map(|item| item.key().id.clone())
    }

    pub(super) fn last_id(&self) -> Option<String> {
        self.items.last().map(|item| item.key().id.clone())
    }
}

/// The `limit` items after `key` (from the newest when `None`).
pub(super) fn older_page<S: Sequence>(
    sequence: &S,
    key: Option<&SortKey>,
    limit: usize,
) -> Page<S::Item> {
    Page::from_lookahead(sequence.older(key, limit + 1), limit)
}

/// The `limit` items just before `key`, newest first; `has_more` tells whether even newer
/// ones exist.
fn newer_page<S: Sequence>(sequence: &S, key: &SortKey, limit: usize) -> Page<S::Item> {
    let mut page = Page::from_lookahead(sequence.newer(key, limit + 1), limit);
    page.items.reverse();
    page
}

/// A page in the id-based shape: `before_id`, `after_id` (at most one) and `limit`.
fn id_page<S: Sequence>(sequence: &S, query: &Query) -> Result<Page<S::Item>, ApiError> {
    let limit = parse_limit(query)?;
    let key_of = |name: &str, id: &str| {
        sequence
            .key_of(id)
            .ok_or_else(|| ApiError::invalid(format!("{name}: no object with id {id:?}")))
    };
    match (query.first("before_id"), query.first("after_id")) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "before_id and after_id cannot be used together",
        )),
        (Some(before), None) => Ok(newer_page(sequence, &key_of("before_id", before)?, limit)),
        (None, Some(after)) => Ok(older_page(
            sequence,
            Some(&key_of("after_id", after)?),
            limit,
        )),
        (None, None) => Ok(older_page(sequence, None, limit)),
    }
}

/// An id-based page of `sequence` as `query` asks, distorted as `fault` says (`serial` makes
/// the cursors of [`ListingFault::RepeatItems`] new on every request).
pub(super) fn id_page_body<S: Sequence>(
    sequence: &S,
    query: &Query,
    fault: Option<ListingFault>,
    serial: u64,
) -> Result<IdPageBody<S::Item>, ApiError> {
    let page = match fault {
        Some(ListingFault::RepeatItems) => older_page(sequence, None, parse_limit(query)?),
        _ => id_page(sequence, query)?,
    };
    let mut body = IdPageBody {
        first_id: page.first_id(),
        last_id: page.last_id(),
        has_more: page.has_more,
        data: page.items,
    };
    match fault {
        None => {}
        Some(ListingFault::RepeatCursor) => {
            body.has_more = true;
            if let Some(after) = query.first("after_id") {
                body.last_id = Some(after.to_owned());
            }
        }
        Some(ListingFault::RepeatItems) => {
            body.has_more = true;
            body.last_id = Some(format!("{}~loop{serial}", body.last_id.unwrap_or_default()));
        }
    }
    Ok(body)
}

/// The body of an id-based page.
#[derive(Serialize)]
pub(super) struct IdPageBody<T> {
    data: Vec<T>,
    has_more: bool,
    first_id: Option<String>,
    last_id: Option<String>,
}

impl<T> IdPageBody<T> {
    /// The same page with each item shown by `object`.
    pub(super) fn show<'a, U>(&'a self, object: impl Fn(&'a T) -> U) -> IdPageBody<U> {
        IdPageBody {
            data: self.data.iter().map(object).collect(),
            has_more: self.has_more,
            first_id: self.first_id.clone(),
            last_id: self.last_id.clone(),
        }
    }
}

/// `limit`: default 20, 1 to 1000.
pub(super) fn parse_limit(query: &Query) -> Result<usize, ApiError> {
    let Some(value) = query.first("limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    value
        .parse()
        .ok()
        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "limit: must be an integer from 1 to {MAX_LIMIT}, got {value:?}"
            ))
        })
}

/// The GA cursor naming the position after `key`: `page_` and the hex of the key.
pub(super) fn encode_cursor(key: &SortKey) -> String {
    let plain = format!("{}.{}.{}", key.time.secs, key.time.nanos, key.id);
    let mut cursor = CURSOR_PREFIX.to_owned();
    for byte in plain.bytes() {
        let _ = write!(cursor, "{byte:02x}");
    }
    cursor
}

/// The key in a cursor from [`encode_cursor`].
pub(super) fn decode_cursor(cursor: &str) -> Option<SortKey> {
    let hex = cursor.strip_prefix(CURSOR_PREFIX)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect();
    let plain = String::from_utf8(bytes?).ok()?;
    let mut parts = plain.splitn(3, '.');
    let secs = parts.next()?.parse().ok()?;
    let nanos = parts.next()?.parse().ok()?;
    let id = parts.next()?.to_owned();
    Some(SortKey {
        time: Timestamp { secs, nanos },
        id,
    })
}

/// Up to `n` items of `a` and `b` (each already in the wanted order), merged in that order.
pub(super) fn merge<T: Keyed>(a: Vec<T>, b: Vec<T>, n: usize, newest_first: bool) -> Vec<T> {
    let mut merged = Vec::with_capacity(n.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while merged.len() < n {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => (x.key() > y.key()) == newest_first,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        merged.extend(if take_a { a.next() } else { b.next() });
    }
    merged
}

/// Indexes of the newest `n` items, of an ascending sequence of `len` items, that are older
/// than `key` (all when `None`). `compare(at, key)` compares the key of item `at` with `key`.
pub(super) fn older_range(
    len: usize,
    key: Option<&SortKey>,
    n: usize,
    compare: impl Fn(usize, &SortKey) -> Ordering,
) -> Range<usize> {
    let end = key.map_or(len, |key| {
        partition_point(len, |at| compare(at, key).is_lt())
    });
    end.saturating_sub(n)..end
}

/// Indexes of the oldest `n` items, of an ascending sequence of `len` items, that are newer
/// than `key`.
pub(super) fn newer_range(
    len: usize,
    key: &SortKey,
    n: usize,
    compare: impl Fn(usize, &SortKey) -> Ordering,
) -> Range<usize> {
    let start = partition_point(len, |at| compare(at, key).is_le());
    start..len.min(start.saturating_add(n))
}

/// The first index in `0..len` where `below` turns false (`below` must be monotone).
fn partition_point(len: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = low + (high - low) / 2;
        if below(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

/// A decoded query string.
#[derive(Debug, Default)]
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    /// Splits `a=b&c=d`, percent-decoding names and values (`+` is a space).
    pub(super) fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
            .collect();
        Query(pairs)
    }

    pub(super) fn first(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    pub(super) fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        let name = name.to_owned();
        self.0
            .iter()
            .filter(move |(candidate, _)| *candidate == name)
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.first(name).is_some()
    }
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as they are.
pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| text.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[at]) {
            (Some(byte), _) => {
                decoded.push(byte);
                at += 3;
            }
            (None, b'+') => {
                decoded.push(b' ');
                at += 1;
            }
            (None, byte) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_queries_decode() {
        let key = SortKey {
            time: Timestamp {
                secs: 1_785_751_200,
                nanos: 5,
            },
            id: "file_a.b".to_owned(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&key)), Some(key));
        assert_eq!(decode_cursor("page_zz"), None);
        assert_eq!(decode_cursor("abc"), None);
        let query = Query::parse("ids%5B%5D=a&ids[]=b&limit=5&x=a+b%2");
        assert_eq!(query.all("ids[]").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(query.first("x"), Some("a b%2"));
        assert_eq!(parse_limit(&query).unwrap(), 5);
    }
}
