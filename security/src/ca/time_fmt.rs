//! Timestamps for people: `2026-03-01 12:00:00 UTC` and `2026-03-01`.
//! Unix seconds everywhere else.

use time::OffsetDateTime;

/// Date and time in UTC; out-of-range values print as raw seconds.
pub fn datetime(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix}"),
    }
}

/// The date in UTC.
pub(crate) fn date(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        Err(_) => format!("@{unix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(datetime(1_735_689_600), "2025-01-01 00:00:00 UTC");
        assert_eq!(date(2_051_222_400), "2035-01-01");
        assert_eq!(date(i64::MAX), format!("@{}", i64::MAX));
    }
}
