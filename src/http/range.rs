//! Byte ranges on the wire: the `Range` header we send and the `Content-Range` we are sent.

use std::ops::Range;

/// `Range` header value for the half-open `range`; `end == None` asks for everything from start.
pub fn range_header(start: u64, end: Option<u64>) -> String {
    match end {
        Some(end) => format!("bytes={start}-{}", end - 1),
        None => format!("bytes={start}-"),
    }
}

/// A parsed `Content-Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/total` (total `None` for `*`), stored half-open.
    Bytes {
        start: u64,
        end: u64,
        total: Option<u64>,
    },
    /// `bytes */total`, sent with 416.
    Unsatisfied { total: u64 },
}

impl ContentRange {
    pub fn parse(value: &str) -> Option<ContentRange> {
        let spec = value.trim().strip_prefix("bytes")?.trim_start();
        let (range, total) = spec.split_once('/')?;
        let total = total.trim();
        if range.trim() == "*" {
            return Some(ContentRange::Unsatisfied {
                total: total.parse().ok()?,
            });
        }
        let (first, last) = range.trim().split_once('-')?;
        let (start, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
        let total = if total == "*" {
            None
        } else {
            Some(total.parse().ok()?)
        };
        let valid = start <= last && total.is_none_or(|total| last < total);
        valid.then_some(ContentRange::Bytes {
            start,
            end: last + 1,
            total,
        })
    }

    /// The half-open byte range this header announces, if it announces one.
    pub fn bytes(&self) -> Option<Range<u64>> {
        match *self {
            ContentRange::Bytes { start, end, .. } => Some(start..end),
            ContentRange::Unsatisfied { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bounded_and_open_ranges() {
        assert_eq!(range_header(0, Some(1024)), "bytes=0-1023");
        assert_eq!(range_header(500, None), "bytes=500-");
    }

    #[test]
    fn parses_content_range_forms() {
        assert_eq!(
            ContentRange::parse("bytes 0-99/1000"),
            Some(ContentRange::Bytes {
                start: 0,
                end: 100,
                total: Some(1000)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 5-9/*"),
            Some(ContentRange::Bytes {
                start: 5,
                end: 10,
                total: None
            })
        );
        assert_eq!(
            ContentRange::parse("bytes */42"),
            Some(ContentRange::Unsatisfied { total: 42 })
        );
    }

    #[test]
    fn rejects_malformed_or_impossible_ranges() {
        for bad in [
            "bytes 9-5/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes 0-1",
            "bytes a-b/c",
            "",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }
}
