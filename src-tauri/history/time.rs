//! Dates for the history's day rows and file names, in UTC, without a date library.

/// `YYYY-MM-DD` of epoch ms `at`.
pub fn date(at_ms: i64) -> String {
    let (y, m, d) = civil(at_ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYYMMDD-HHMMSS` of epoch ms `at`, for a file name.
pub fn stamp(at_ms: i64) -> String {
    let (y, m, d) = civil(at_ms.div_euclid(86_400_000));
    let s = at_ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The calendar date of a day number since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_stamps_are_utc_calendar_dates() {
        assert_eq!(date(0), "1970-01-01");
        // 2026-12-04T22:30:05Z
        assert_eq!(date(1_796_423_405_000), "2026-12-04");
        assert_eq!(stamp(1_796_423_405_000), "20261204-223005");
        assert_eq!(date(951_782_400_000), "2000-02-29");
        assert_eq!(date(-86_400_000), "1969-12-31");
    }
}
