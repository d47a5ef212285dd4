//! RFC 3339 timestamps: just enough parsing and formatting for the API's `created_at` fields.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) const DAY_SECS: i64 = 24 * 60 * 60;

/// A UTC instant: seconds since the Unix epoch plus nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct Timestamp {
    pub(super) secs: i64,
    pub(super) nanos: u32,
}

impl Timestamp {
    pub(super) fn from_secs(secs: i64) -> Self {
        Timestamp { secs, nanos: 0 }
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` (fraction dropped).
    pub(super) fn to_rfc3339(self) -> String {
        format_rfc3339(self.secs)
    }

    /// The same instant as a [`SystemTime`] (clamped at the epoch), for HTTP dates.
    pub(super) fn to_system_time(self) -> SystemTime {
        let secs = u64::try_from(self.secs).unwrap_or(0);
        UNIX_EPOCH + Duration::from_secs(secs)
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub(super) fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let date = parse_fields(&text[..10], '-')?;
    let time = parse_fields(&text[11..19], ':')?;
    let (nanos, zone) = parse_fraction(&text[19..])?;
    let offset = parse_offset(zone)?;
    let [year, month, day] = date;
    let [hour, minute, second] = time;
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * DAY_SECS + hour * 3600 + minute * 60 + second - offset;
    Some(Timestamp { secs, nanos })
}

/// Three digit groups separated by `separator` (`2026-08-03`, `10:00:00`).
fn parse_fields(text: &str, separator: char) -> Option<[i64; 3]> {
    let mut fields = text.split(separator).map(parse_digits);
    let parsed = [fields.next()??, fields.next()??, fields.next()??];
    fields.next().is_none().then_some(parsed)
}

fn parse_digits(text: &str) -> Option<i64> {
    let digits = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    if digits { text.parse().ok() } else { None }
}

/// An optional `.fraction`, returned as nanoseconds, and the rest (the zone).
fn parse_fraction(text: &str) -> Option<(u32, &str)> {
    let Some(fraction) = text.strip_prefix('.') else {
        return Some((0, text));
    };
    let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 {
        return None;
    }
    let mut nanos = 0;
    for (position, digit) in fraction.bytes().take(len).enumerate() {
        if position < 9 {
            nanos += u32::from(digit - b'0') * 10_u32.pow(8 - position as u32);
        }
    }
    Some((nanos, &fraction[len..]))
}

/// `Z` or `±HH:MM`, as seconds east of UTC.
fn parse_offset(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = zone[1..].split_once(':')?;
    let (hours, minutes) = (parse_digits(hours)?, parse_digits(minutes)?);
    (hours < 24 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(super) fn format_rfc3339(secs: i64) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(DAY_SECS));
    let of_day = secs.rem_euclid(DAY_SECS);
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// Whole seconds since the epoch, rounded up.
pub(super) fn ceil_unix_secs(time: SystemTime) -> i64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    if since.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number from [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        let noon = parse_rfc3339("2026-08-03T10:00:00Z").unwrap();
        assert_eq!(noon.secs, 1_785_751_200);
        assert_eq!(noon.to_rfc3339(), "2026-08-03T10:00:00Z");
        let shifted = parse_rfc3339("2026-08-03T12:00:00+02:00").unwrap();
        assert_eq!(shifted, noon);
        let fine = parse_rfc3339("2026-08-03T10:00:00.25Z").unwrap();
        assert_eq!((fine.secs, fine.nanos), (noon.secs, 250_000_000));
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert!(parse_rfc3339("2026-08-03 10:00").is_none());
        assert!(parse_rfc3339("2026-13-03T10:00:00Z").is_none());
        assert!(parse_rfc3339("2026-08-03T10:00:00").is_none());
    }
}
