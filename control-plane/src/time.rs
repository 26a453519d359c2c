//! Timestamps as the API shows and takes them (stored values are ms since the epoch), through
//! chrono: RFC 3339 out, `YYYY-MM-DD` dates in, calendar months for quotas and usage.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};

/// `2026-11-22T20:43:05.123Z` for `ms` since the Unix epoch.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// ms since the epoch of an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// ms since the epoch of a `YYYY-MM-DD` date (midnight UTC); `None` for anything that is not
/// a real calendar date from 1970 to 9999.
pub fn parse_date(s: &str) -> Option<i64> {
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    if !(1970..=9999).contains(&d.year()) {
        return None;
    }
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// The first instant (ms) of the UTC calendar month that holds `ms`, and of the next one.
pub fn month_bounds(ms: i64) -> (i64, i64) {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    let first = |y: i32, m: u32| {
        NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp_millis())
            .unwrap_or_default()
    };
    let (y, m) = (t.year(), t.month());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (first(y, m), first(ny, nm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_months() {
        assert_eq!(parse_date("2000-02-29"), Some(951_782_400_000));
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
        let (a, b) = month_bounds(1_795_380_185_123);
        assert_eq!(rfc3339(a), "2026-11-01T00:00:00.000Z");
        assert_eq!(rfc3339(b), "2026-12-01T00:00:00.000Z");
        let (a, b) = month_bounds(parse_date("2026-12-31").unwrap());
        assert_eq!(
            (rfc3339(a), rfc3339(b)),
            (
                "2026-12-01T00:00:00.000Z".into(),
                "2027-01-01T00:00:00.000Z".into()
            )
        );
    }

    #[test]
    fn impossible_dates_are_refused() {
        // The hand-written parser took any day up to 31 in any month.
        for bad in [
            "2026-02-31",
            "2026-02-29",
            "2026-04-31",
            "2026-00-10",
            "1969-12-31",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(parse_date("2028-02-29"), Some(1_835_395_200_000));
    }

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_380_185_123), "2026-11-22T20:43:05.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            parse_rfc3339("2026-11-22T20:43:05.123Z"),
            Some(1_795_380_185_123)
        );
        // Across midnight: a difference stays a difference.
        let (a, b) = (
            parse_rfc3339("2026-11-22T23:59:59.500Z").unwrap(),
            parse_rfc3339("2026-11-23T00:00:00.250Z").unwrap(),
        );
        assert_eq!(b - a, 750);
    }
}
