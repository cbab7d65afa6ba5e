//! Time as the API writes it: RFC 3339, UTC, milliseconds, `Z`.
//! Storage keeps Unix milliseconds; these helpers convert between the two.

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};

/// `2024-01-30T12:00:00.000Z`.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Formats Unix milliseconds the same way.
pub fn format_millis(epoch_ms: i64) -> String {
    format_timestamp(from_millis(epoch_ms))
}

pub fn from_millis(epoch_ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(epoch_ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// Start of the calendar month (UTC) that holds `epoch_ms`: monthly limits
/// count from here.
pub fn month_start_millis(epoch_ms: i64) -> i64 {
    let at = from_millis(epoch_ms);
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .map(|d| d.timestamp_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        assert_eq!(format_millis(1_706_616_000_000), "2024-01-30T12:00:00.000Z");
        assert_eq!(format_millis(1_706_616_000_123), "2024-01-30T12:00:00.123Z");
    }

    #[test]
    fn month_start() {
        // 2024-01-30T12:00:00Z -> 2024-01-01T00:00:00Z
        assert_eq!(month_start_millis(1_706_616_000_000), 1_704_067_200_000);
        assert_eq!(month_start_millis(1_704_067_200_000), 1_704_067_200_000);
    }
}
