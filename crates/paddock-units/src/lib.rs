//! Sizes (`512M`, binary units) and durations (`30s`) as operators type them.

use std::time::Duration;

/// Parses sizes such as `512M`, `2G`, `1048576` (binary units: K = 1024).
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let mult: i64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a size such as 512M"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?} is not a size such as 512M"));
    }
    let v = n * mult as f64;
    if v > i64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(v as i64)
}

/// Parses durations such as `500ms`, `30s`, `10m`, `1h`, `2d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a duration such as 30s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("unknown unit in {s:?} (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || secs < 0.0 || secs > 1e10 {
        return Err(format!("{s:?} is not a duration such as 30s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Prints a byte count the way [`parse_bytes`] reads it, e.g. `512M`.
pub fn format_bytes(n: i64) -> String {
    for (unit, mult) in [("T", 1i64 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if n >= mult && n % mult == 0 {
            return format!("{}{unit}", n / mult);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("12X").is_err());
        assert!(parse_bytes("-1").is_err());
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_bytes(512 << 20), "512M");
    }
}
