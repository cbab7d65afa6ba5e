//! Money in integer minor units (cents): parsing operator input, formatting,
//! and the price of a period. No floating point touches an amount.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an amount like 100 or 12.50")]
pub struct AmountError(pub String);

/// Parses `12`, `12.5` or `12.50` into minor units (1250). At most two
/// decimals; negative amounts are refused.
pub fn parse_amount(raw: &str) -> Result<i64, AmountError> {
    let bad = || AmountError(raw.to_string());
    let raw_trim = raw.trim();
    let (whole, frac) = match raw_trim.split_once('.') {
        Some((w, f)) => (w, f),
        None => (raw_trim, ""),
    };
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if raw_trim.ends_with('.') {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

/// `1250` -> `"12.50"`.
pub fn format_amount(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// The amount as a JSON number with two decimals' worth of precision.
pub fn as_decimal(minor: i64) -> f64 {
    minor as f64 / 100.0
}

/// Price of `quantity` services for `days`, from a price per 30 days,
/// rounded half up to the minor unit.
pub fn period_price(price_per_30_days: i64, days: i64, quantity: i64) -> i64 {
    let numerator = i128::from(price_per_30_days) * i128::from(days) * i128::from(quantity);
    ((numerator * 2 + 30) / 60) as i64
}

/// Parses a RAM size as clients write it: `4 GB`, `4GB`, `512 MB`, `4`
/// (gigabytes), case-insensitive; returns mebibytes.
pub fn parse_ram(raw: &str) -> Option<i64> {
    let compact: String = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let (number, unit) = compact.split_at(
        compact
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(compact.len()),
    );
    let n: i64 = number.parse().ok()?;
    if n <= 0 {
        return None;
    }
    match unit {
        "" | "G" | "GB" | "GIB" => n.checked_mul(1024),
        "M" | "MB" | "MIB" => Some(n),
        _ => None,
    }
}

/// `4096` -> `"4 GB"`, `512` -> `"512 MB"`.
pub fn format_ram(mb: i64) -> String {
    if mb % 1024 == 0 {
        format!("{} GB", mb / 1024)
    } else {
        format!("{mb} MB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("100"), Ok(10_000));
        assert_eq!(parse_amount("12.5"), Ok(1_250));
        assert_eq!(parse_amount("12.05"), Ok(1_205));
        assert_eq!(parse_amount(" 0.01 "), Ok(1));
        for bad in [
            "",
            "-1",
            "1.234",
            "abc",
            "1.",
            ".5",
            "1e3",
            "99999999999999999999",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        assert_eq!(format_amount(1_205), "12.05");
        assert_eq!(format_amount(-50), "-0.50");
    }

    #[test]
    fn period_prices_round_half_up_without_floats() {
        assert_eq!(period_price(999, 30, 1), 999);
        assert_eq!(period_price(999, 30, 3), 2997);
        assert_eq!(period_price(1000, 15, 1), 500);
        assert_eq!(period_price(1000, 1, 1), 33); // 33.33
        assert_eq!(period_price(1000, 2, 1), 67); // 66.67
        assert_eq!(period_price(1, 15, 1), 1); // 0.5 rounds up
        assert_eq!(period_price(0, 365, 10), 0);
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(parse_ram("4 GB"), Some(4096));
        assert_eq!(parse_ram("4GB"), Some(4096));
        assert_eq!(parse_ram("4gb"), Some(4096));
        assert_eq!(parse_ram("512 MB"), Some(512));
        assert_eq!(parse_ram("8"), Some(8192));
        assert_eq!(parse_ram("0 GB"), None);
        assert_eq!(parse_ram("four"), None);
        assert_eq!(parse_ram("4 TB"), None);
        assert_eq!(format_ram(4096), "4 GB");
        assert_eq!(format_ram(512), "512 MB");
    }
}
