//! Command-line values the binaries share, as clap value parsers: each refuses a bad value
//! saying why (negative, out of range, not a number), so the error names the flag it came
//! from rather than a config file, and nothing is saturated silently.

/// A count such as `--terms`: `1000`, `1_000`, `4e9`, `2^30`. Refuses negative numbers,
/// fractions, and anything at or above 2^64.
pub fn whole_count(s: &str) -> Result<u64, String> {
    let cleaned = s.trim().replace('_', "");
    if cleaned.starts_with('-') {
        return Err(format!("{s} is negative; a count is 0 or more"));
    }
    if let Ok(n) = cleaned.parse::<u64>() {
        return Ok(n);
    }
    if let Some((base, exp)) = cleaned.split_once('^') {
        let (Ok(base), Ok(exp)) = (base.parse::<u64>(), exp.parse::<u32>()) else {
            return Err(format!(
                "{s} is not a whole number (examples: 1000, 4e9, 2^30)"
            ));
        };
        return base
            .checked_pow(exp)
            .ok_or_else(|| format!("{s} is out of range (at most {})", u64::MAX));
    }
    // Digits alone that did not parse as u64 are too large.
    if !cleaned.is_empty() && cleaned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s} is out of range (at most {})", u64::MAX));
    }
    // 2^64 as f64; `u64::MAX as f64` rounds up to it, so compare strictly below.
    const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;
    match cleaned.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= TWO_TO_64 => {
            Err(format!("{s} is out of range (at most {})", u64::MAX))
        }
        Ok(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
        Ok(f) if f.is_finite() && f >= 0.0 => Err(format!("{s} is not a whole number")),
        _ => Err(format!(
            "{s} is not a whole number (examples: 1000, 4e9, 2^30)"
        )),
    }
}

/// A quantity that must be above zero, such as `--cpus`.
pub fn positive_number(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s} is not a number (examples: 0.5, 2)"))?;
    if !v.is_finite() {
        return Err(format!("{s} is not a finite number"));
    }
    if v < 0.0 {
        return Err(format!("{s} is negative; it must be above 0"));
    }
    if v == 0.0 {
        return Err("0 is not enough; it must be above 0".into());
    }
    Ok(v)
}

/// An amount of memory in MiB, at least 1, such as `--mem`.
pub fn positive_mib(s: &str) -> Result<u64, String> {
    match whole_count(s)? {
        0 => Err("0 MiB is not enough; at least 1 (MiB)".into()),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_why_they_are_refused_and_never_saturate() {
        assert_eq!(whole_count("1000"), Ok(1000));
        assert_eq!(whole_count("1_000"), Ok(1000));
        assert_eq!(whole_count("4e9"), Ok(4_000_000_000));
        assert_eq!(whole_count("2^30"), Ok(1 << 30));
        let out_of_range = |s: &str| whole_count(s).unwrap_err().contains("out of range");
        // Issue 22: these used to be "not a whole number", and 2^64 as 1.8446744073709552e19
        // saturated to u64::MAX.
        assert!(out_of_range("1e30"), "{:?}", whole_count("1e30"));
        assert!(out_of_range("2^64"));
        assert!(out_of_range("18446744073709551616"));
        assert!(out_of_range("1.8446744073709552e19"));
        assert!(whole_count("-5").unwrap_err().contains("negative"));
        assert!(whole_count("1.5")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(whole_count("lots").is_err());
    }

    #[test]
    fn positive_numbers_refuse_negative_zero_and_nonsense_saying_which() {
        assert_eq!(positive_number("0.5"), Ok(0.5));
        assert!(positive_number("-1").unwrap_err().contains("negative"));
        assert!(positive_number("0").unwrap_err().contains("above 0"));
        assert!(positive_number("inf").unwrap_err().contains("finite"));
        assert!(positive_number("NaN").is_err());
        assert!(positive_number("two").is_err());
        assert_eq!(positive_mib("64"), Ok(64));
        assert!(positive_mib("0").unwrap_err().contains("at least 1"));
    }
}
