//! Which files a command selects: the one grammar of `--include`, `--exclude`, `--mime`,
//! `--since`, `--until`, `--min-size` and `--max-size`, shared by `sync`, `files ls` and `ls`.
//!
//! Globs match the whole filename (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`; case-sensitive).
//! `--include` (repeatable) keeps a file when any glob matches; `--exclude` drops it when any
//! matches. `--mime` is exact or `type/*`. `--since` is inclusive, `--until` exclusive, on
//! `created_at`. Batches have a creation date and nothing else: the date filters select them,
//! and any file-only filter (names, MIME, sizes) leaves them out.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::api::FileObject;
use crate::store::index::{BatchMeta, FileMeta};

/// A selection; the default selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub mime: Vec<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
}

/// What a selection looks at. Batches have no name, MIME type nor size.
pub trait Selectable {
    fn id(&self) -> &str;
    fn created_at(&self) -> &str;
    /// Filename, MIME type and size, for files.
    fn file(&self) -> Option<(&str, &str, u64)>;
}

impl Selection {
    /// Whether it selects everything.
    pub fn is_all(&self) -> bool {
        *self == Selection::default()
    }

    /// Whether any filter that only files can pass is set.
    fn has_file_filters(&self) -> bool {
        !self.include.is_empty()
            || !self.exclude.is_empty()
            || !self.mime.is_empty()
            || self.min_size.is_some()
            || self.max_size.is_some()
    }

    pub fn selects(&self, item: &impl Selectable) -> bool {
        if !self.dates_select(item.created_at()) {
            return false;
        }
        match item.file() {
            Some((name, mime, size)) => self.file_selects(name, mime, size),
            None => !self.has_file_filters(),
        }
    }

    fn dates_select(&self, created_at: &str) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(at) = rfc3339_seconds(created_at) else {
            return false;
        };
        self.since.is_none_or(|since| at >= since) && self.until.is_none_or(|until| at < until)
    }

    fn file_selects(&self, name: &str, mime: &str, size: u64) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|g| glob(g, name));
        let excluded = self.exclude.iter().any(|g| glob(g, name));
        let mime_ok = self.mime.is_empty() || self.mime.iter().any(|m| mime_matches(m, mime));
        included
            && !excluded
            && mime_ok
            && self.min_size.is_none_or(|min| size >= min)
            && self.max_size.is_none_or(|max| size <= max)
    }
}

impl Selectable for FileObject {
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> &str {
        &self.created_at
    }
    fn file(&self) -> Option<(&str, &str, u64)> {
        Some((&self.filename, &self.mime_type, self.size_bytes))
    }
}

impl Selectable for FileMeta {
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> &str {
        &self.created_at
    }
    fn file(&self) -> Option<(&str, &str, u64)> {
        Some((&self.filename, &self.mime_type, self.size_bytes))
    }
}

impl Selectable for BatchMeta {
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> &str {
        &self.created_at
    }
    fn file(&self) -> Option<(&str, &str, u64)> {
        None
    }
}

fn mime_matches(pattern: &str, mime: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(kind) => mime.split('/').next() == Some(kind),
        None => pattern == mime,
    }
}

/// Whether the glob `pattern` matches all of `text`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    glob_from(&pattern, &text)
}

fn glob_from(pattern: &[char], text: &[char]) -> bool {
    let Some((&first, rest)) = pattern.split_first() else {
        return text.is_empty();
    };
    match first {
        '*' => (0..=text.len()).any(|skip| glob_from(rest, &text[skip..])),
        '?' => !text.is_empty() && glob_from(rest, &text[1..]),
        '[' => match (class(rest), text.first()) {
            (Some((matches, after)), Some(&c)) => matches(c) && glob_from(after, &text[1..]),
            (None, Some(&'[')) => glob_from(rest, &text[1..]),
            _ => false,
        },
        c => text.first() == Some(&c) && glob_from(rest, &text[1..]),
    }
}

/// A `[...]` class (after its `[`): whether a character is in it, and the pattern after `]`.
fn class(pattern: &[char]) -> Option<(impl Fn(char) -> bool + '_, &[char])> {
    let (negated, body) = match pattern.first() {
        Some('!' | '^') => (true, &pattern[1..]),
        _ => (false, pattern),
    };
    // A `]` right after `[` (or `[!`) is a member.
    let end = 1 + body.get(1..)?.iter().position(|&c| c == ']')?;
    let members = &body[..end];
    let matches = move |c: char| {
        let mut i = 0;
        let mut found = false;
        while i < members.len() {
            if i + 2 < members.len() && members[i + 1] == '-' {
                found |= (members[i]..=members[i + 2]).contains(&c);
                i += 3;
            } else {
                found |= members[i] == c;
                i += 1;
            }
        }
        found != negated
    };
    Some((matches, &body[end + 1..]))
}

/// Why a `--since`/`--until` value cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a time: use a date (2026-08-01), an RFC 3339 time (2026-08-01T10:00:00Z) or \
     an age such as 30m, 12h, 7d or 2w"
)]
pub struct BadTime(pub String);

/// A `--since`/`--until` value as Unix seconds: a date (midnight UTC), an RFC 3339 time, or an
/// age (`30m`, `12h`, `7d`, `2w`) before `now`.
pub fn parse_time(text: &str, now: SystemTime) -> Result<i64, BadTime> {
    let bad = || BadTime(text.to_owned());
    let text = text.trim();
    if let Some(at) = rfc3339_seconds(text) {
        return Ok(at);
    }
    if let Some(day) = date_days(text) {
        return Ok(day * 86_400);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(now - number.checked_mul(unit_secs).ok_or_else(bad)?)
}

/// `YYYY-MM-DD` as days since 1970-01-01.
fn date_days(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let mut number = |len: usize| {
        let part = parts.next()?;
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<i64>().ok())
            .flatten()
    };
    let (year, month, day) = (number(4)?, number(2)?, number(2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// An RFC 3339 time (`2026-08-03T10:00:00Z`, fractions and offsets allowed) as Unix seconds.
pub fn rfc3339_seconds(text: &str) -> Option<i64> {
    let (date, rest) = text.split_at_checked(10)?;
    let days = date_days(date)?;
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (time, zone) = rest.split_at_checked(8)?;
    let mut fields = time.split(':').map(|f| f.parse::<i64>().ok());
    let (h, m, s) = (fields.next()??, fields.next()??, fields.next()??);
    let zone = zone.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = match zone.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let (oh, om) = zone.get(1..)?.split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3_600 + om.parse::<i64>().ok()? * 60)
        }
    };
    Some(days * 86_400 + h * 3_600 + m * 60 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn file(name: &str, mime: &str, size: u64, created_at: &str) -> FileMeta {
        FileMeta {
            id: name.into(),
            filename: name.into(),
            mime_type: mime.into(),
            size_bytes: size,
            created_at: created_at.into(),
            downloadable: Some(true),
            expires_at: None,
        }
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("*.csv", "report.csv"));
        assert!(!glob("*.csv", "report.csv.bak"));
        assert!(glob("r?port.*", "report.csv"));
        assert!(glob("[a-c]*", "b.txt") && !glob("[!a-c]*", "b.txt"));
        assert!(glob("*", "") && !glob("?", ""));
        assert!(glob("a[]]b", "a]b"));
    }

    #[test]
    fn times_are_dates_rfc3339_or_ages() {
        assert_eq!(rfc3339_seconds("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(
            rfc3339_seconds("2026-08-03T10:00:00.123Z"),
            Some(1_785_751_200)
        );
        assert_eq!(
            rfc3339_seconds("2026-08-03T12:00:00+02:00"),
            Some(1_785_751_200)
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_time("2026-08-03", now), Ok(1_785_715_200));
        assert_eq!(parse_time("7d", now), Ok(1_000_000 - 7 * 86_400));
        assert_eq!(parse_time("30m", now), Ok(1_000_000 - 1_800));
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("2026-13-01", now).is_err());
    }

    #[test]
    fn every_filter_narrows_and_batches_pass_date_filters_only() {
        let csv = file("a.csv", "text/csv", 100, "2026-06-05T10:00:00Z");
        let png = file("b.png", "image/png", 5_000, "2026-08-05T10:00:00Z");
        let select = |s: Selection| [&csv, &png].map(|f| s.selects(f));
        let globs = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(select(Selection::default()), [true, true]);
        let include = Selection {
            include: globs(&["*.csv"]),
            ..Selection::default()
        };
        assert_eq!(select(include), [true, false]);
        let exclude = Selection {
            exclude: globs(&["*.csv"]),
            ..Selection::default()
        };
        assert_eq!(select(exclude), [false, true]);
        let mime = Selection {
            mime: globs(&["image/*"]),
            ..Selection::default()
        };
        assert_eq!(select(mime), [false, true]);
        let sizes = Selection {
            min_size: Some(100),
            max_size: Some(4_999),
            ..Selection::default()
        };
        assert_eq!(select(sizes), [true, false]);
        let since = parse_time("2026-07-01", SystemTime::now()).ok();
        let dates = Selection {
            since,
            ..Selection::default()
        };
        assert_eq!(select(dates.clone()), [false, true]);
        let batch = BatchMeta {
            id: "b".into(),
            created_at: "2026-08-10T00:00:00Z".into(),
            processing_status: "ended".into(),
            ended_at: None,
            results_url: None,
            expected_results: 0,
        };
        assert!(dates.selects(&batch));
        assert!(
            !Selection {
                include: globs(&["*"]),
                ..Selection::default()
            }
            .selects(&batch)
        );
    }
}
