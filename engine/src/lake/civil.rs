//! Calendar dates and timestamps as text, without a time zone database.
//!
//! Partition values and column statistics spell dates as ISO 8601 `YYYY-MM-DD` and
//! timestamps as a path-safe variant of RFC 3339. The conversion from days since the Unix
//! epoch is Howard Hinnant's `civil_from_days`, exact for every `i64` day count, so no value
//! is ever "out of range" here. Years outside 0..=9999 carry an explicit sign and at least
//! four digits (`-0001-01-01`, `+10000-01-01`), as ISO 8601's expanded form does.

use arrow::datatypes::TimeUnit;

/// (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31 and 1..=12).
    (year, month as u32, day as u32)
}

fn format_year(year: i64) -> String {
    if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    }
}

/// `days` since 1970-01-01 as `YYYY-MM-DD`.
pub(crate) fn format_date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{}-{month:02}-{day:02}", format_year(year))
}

/// Parses what [`format_date`] writes into (year, month, day), for ordering.
pub(crate) fn parse_date(text: &str) -> Option<(i64, u32, u32)> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'-' => (-1, &text[1..]),
        b'+' => (1, &text[1..]),
        _ => (1, text),
    };
    let mut parts = rest.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some((sign * year, month, day))
}

/// A timestamp of `unit`s since the epoch as `YYYY-MM-DDTHH-MM-SS[.fff…]`, with as many
/// fraction digits as the unit has (none, 3, 6 or 9) and a trailing `Z` when `utc` (the
/// column has a time zone, so the value is an instant shown in UTC). Colons would be
/// awkward in bucket keys, so the time uses `-`; the fixed width per unit keeps the
/// lexicographic order of the strings chronological for years 0..=9999.
pub(crate) fn format_timestamp(value: i64, unit: TimeUnit, utc: bool) -> String {
    let (per_second, digits) = match unit {
        TimeUnit::Second => (1, 0),
        TimeUnit::Millisecond => (1_000, 3),
        TimeUnit::Microsecond => (1_000_000, 6),
        TimeUnit::Nanosecond => (1_000_000_000, 9),
    };
    let seconds = value.div_euclid(per_second);
    let fraction = value.rem_euclid(per_second);
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (hour, minute, second) = (
        second_of_day / 3_600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    let mut text = format!("{}T{hour:02}-{minute:02}-{second:02}", format_date(days));
    if digits > 0 {
        text.push_str(&format!(".{fraction:0digits$}"));
    }
    if utc {
        text.push('Z');
    }
    text
}

#[cfg(test)]
mod tests;
