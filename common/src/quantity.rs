//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `1G`, `1e3`): parsing with exact
//! decimal arithmetic (no floating point), as apimachinery's `resource.ParseQuantity` does, and
//! conversion to whole base units rounded up. One parser for the API (admission) and the node
//! (limits): a string that does not parse, or whose value does not fit a 64-bit count of the
//! unit asked for, is an error, never "no limit". Pure code.

/// Why a quantity is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    /// Not of the quantity grammar (the message is apimachinery's `ErrFormatWrong`).
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format(String),
    /// Of the grammar, but too large (or too precise) to be counted in 64 bits.
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

/// A parsed quantity: `mantissa × 10^exp10 × 1024^exp1024`, with its sign. Exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp1024: u32,
}

/// Digits beyond this many in the number part are refused (u128 holds 38).
const MAX_DIGITS: usize = 38;

impl Quantity {
    /// Parse a quantity string.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let format = || QuantityError::Format(s.to_string());
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format());
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > MAX_DIGITS {
            return Err(QuantityError::TooLarge(s.to_string()));
        }
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| format())?
        };
        let (exp10, exp1024) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 1),
            "Mi" => (0, 2),
            "Gi" => (0, 3),
            "Ti" => (0, 4),
            "Pi" => (0, 5),
            "Ei" => (0, 6),
            e if e.starts_with(['e', 'E']) => {
                let exp = &e[1..];
                let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format());
                }
                // Anything past ±1000 is far outside what 64 bits count; refuse it here
                // rather than parse a huge exponent.
                let v: i32 = exp
                    .parse()
                    .ok()
                    .filter(|v: &i32| v.abs() <= 1000)
                    .ok_or_else(|| QuantityError::TooLarge(s.to_string()))?;
                (v, 0)
            }
            _ => return Err(format()),
        };
        Ok(Quantity {
            negative: negative && mantissa != 0,
            mantissa,
            exp10: exp10 - frac.len() as i32,
            exp1024,
        })
    }

    /// Is the value below zero?
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The value × 10^`scale`, rounded up (away from zero for positives, toward zero for
    /// negatives, as `ScaledValue`), as an i64; `None` when it does not fit.
    pub fn scaled(&self, scale: i32) -> Option<i64> {
        let mut v: u128 = self.mantissa;
        for _ in 0..self.exp1024 {
            v = v.checked_mul(1024)?;
        }
        let e = self.exp10 + scale;
        let magnitude = if e >= 0 {
            v.checked_mul(10u128.checked_pow(e as u32)?)?
        } else {
            match 10u128.checked_pow(e.unsigned_abs()) {
                Some(d) if self.negative => v / d,
                Some(d) => v.div_ceil(d),
                // Smaller than one unit of the scale: rounds up to one (or down to zero).
                None => u128::from(v != 0 && !self.negative),
            }
        };
        let magnitude = i64::try_from(magnitude).ok()?;
        Some(if self.negative { -magnitude } else { magnitude })
    }
}

/// Parse and convert to whole units × 10^`scale`, refusing what does not fit.
fn scaled(s: &str, scale: i32) -> Result<i64, QuantityError> {
    Quantity::parse(s)?
        .scaled(scale)
        .ok_or_else(|| QuantityError::TooLarge(s.to_string()))
}

/// CPU in millicores (rounded up).
pub fn cpu_millis(s: &str) -> Result<i64, QuantityError> {
    scaled(s, 3)
}

/// Memory (or storage) in bytes (rounded up).
pub fn bytes(s: &str) -> Result<i64, QuantityError> {
    scaled(s, 0)
}

/// A count (`pods`), rounded up.
pub fn count(s: &str) -> Result<i64, QuantityError> {
    scaled(s, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        // (input, bytes, millis); None = refused.
        let cases: &[(&str, Option<i64>, Option<i64>)] = &[
            ("1", Some(1), Some(1000)),
            ("500m", Some(1), Some(500)),
            ("1.5", Some(2), Some(1500)),
            ("0.1", Some(1), Some(100)),
            ("128Mi", Some(134_217_728), Some(134_217_728_000)),
            ("1Gi", Some(1_073_741_824), Some(1_073_741_824_000)),
            ("1.5Gi", Some(1_610_612_736), Some(1_610_612_736_000)),
            ("1G", Some(1_000_000_000), Some(1_000_000_000_000)),
            ("2k", Some(2000), Some(2_000_000)),
            ("1e3", Some(1000), Some(1_000_000)),
            ("1E3", Some(1000), Some(1_000_000)),
            ("1e-3", Some(1), Some(1)),
            ("1n", Some(1), Some(1)),
            ("0", Some(0), Some(0)),
            ("+2", Some(2), Some(2000)),
            (".5", Some(1), Some(500)),
            ("5.", Some(5), Some(5000)),
            ("-1", Some(-1), Some(-1000)),
            ("-500m", Some(0), Some(-500)),
            ("8Ei", None, None),
            ("7Ei", Some(8_070_450_532_247_928_832), None),
            ("1e400", None, None),
            ("1e-400", Some(1), Some(1)),
            ("1e99999999999", None, None),
            ("", None, None),
            ("Mi", None, None),
            ("12Zi", None, None),
            ("abc", None, None),
            ("lots", None, None),
            ("0.5.5Gi", None, None),
            ("1 Gi", None, None),
            (" 1", None, None),
            ("1Gi ", None, None),
            ("1e", None, None),
            ("1e+", None, None),
            ("1KiB", None, None),
            ("--1", None, None),
            (".", None, None),
            ("1.5m", Some(1), Some(2)),
            (&"9".repeat(39), None, None),
            ("99999999999999999999999999999", None, None),
        ];
        for (input, want_bytes, want_millis) in cases {
            assert_eq!(bytes(input).ok(), *want_bytes, "bytes of {input:?}");
            assert_eq!(cpu_millis(input).ok(), *want_millis, "millis of {input:?}");
        }
        assert!(Quantity::parse("-1").unwrap().is_negative());
        assert!(!Quantity::parse("-0").unwrap().is_negative());
        assert!(matches!(bytes("lots"), Err(QuantityError::Format(_))));
        assert!(matches!(bytes("1e400"), Err(QuantityError::TooLarge(_))));
    }
}
