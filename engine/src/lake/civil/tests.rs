use super::*;

#[test]
fn formats_dates_across_eras() {
    let cases: &[(i64, &str)] = &[
        (0, "1970-01-01"),
        (-1, "1969-12-31"),
        (59, "1970-03-01"),
        (11_016, "2000-02-29"),
        (19_844, "2024-05-01"),
        (-719_528, "0000-01-01"),
        (-719_529, "-0001-12-31"),
        (2_932_896, "9999-12-31"),
        (2_932_897, "+10000-01-01"),
    ];
    for (days, text) in cases {
        assert_eq!(format_date(*days), *text, "days {days}");
    }
}

#[test]
fn date_text_parses_back_for_ordering() {
    assert_eq!(parse_date("2024-05-01"), Some((2024, 5, 1)));
    assert_eq!(parse_date("-0001-12-31"), Some((-1, 12, 31)));
    assert_eq!(parse_date("+10000-01-01"), Some((10_000, 1, 1)));
    assert!(parse_date("-0001-12-31") < parse_date("0000-01-01"));
    for bad in [
        "",
        "2024-13-01",
        "2024-05",
        "2024-05-01-02",
        "x-01-01",
        "2024-05-00",
    ] {
        assert_eq!(parse_date(bad), None, "{bad:?}");
    }
    for days in [-800_000, -1, 0, 1, 19_844, 3_000_000] {
        let (y, m, d) = parse_date(&format_date(days)).expect("round trip");
        assert_eq!(
            format!("{}-{m:02}-{d:02}", format_year(y)),
            format_date(days)
        );
    }
}

#[test]
fn formats_timestamps_per_unit() {
    // 2024-05-01 13:45:30.123456789 UTC
    let nanos: i64 = 1_714_571_130_123_456_789;
    assert_eq!(
        format_timestamp(nanos, TimeUnit::Nanosecond, true),
        "2024-05-01T13-45-30.123456789Z"
    );
    assert_eq!(
        format_timestamp(nanos / 1_000, TimeUnit::Microsecond, false),
        "2024-05-01T13-45-30.123456"
    );
    assert_eq!(
        format_timestamp(nanos / 1_000_000, TimeUnit::Millisecond, false),
        "2024-05-01T13-45-30.123"
    );
    assert_eq!(
        format_timestamp(nanos / 1_000_000_000, TimeUnit::Second, true),
        "2024-05-01T13-45-30Z"
    );
    // Before the epoch the fraction still counts forward from the second.
    assert_eq!(
        format_timestamp(-1, TimeUnit::Millisecond, false),
        "1969-12-31T23-59-59.999"
    );
    assert_eq!(
        format_timestamp(i64::MIN, TimeUnit::Second, false),
        "-292277022657-01-27T08-29-52"
    );
}
