//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `1G`, `1e3`): parsing to numbers. Pure code.

/// A quantity that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

/// Parse a quantity to its value in base units (cores for cpu, bytes for memory).
pub fn parse(s: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError(s.to_string());
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num == "+" || num == "-" {
        return Err(err());
    }
    let n: f64 = num.parse().map_err(|_| err())?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with('e') || e.starts_with('E') => {
            let exp: i32 = e[1..].parse().map_err(|_| err())?;
            10f64.powi(exp)
        }
        _ => return Err(err()),
    };
    Ok(n * mult)
}

/// CPU in millicores.
pub fn cpu_millis(s: &str) -> Result<i64, QuantityError> {
    Ok((parse(s)? * 1000.0).ceil() as i64)
}

/// Memory (or storage) in bytes.
pub fn bytes(s: &str) -> Result<i64, QuantityError> {
    Ok(parse(s)?.ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<f64>)] = &[
            ("1", Some(1.0)),
            ("500m", Some(0.5)),
            ("1.5", Some(1.5)),
            ("128Mi", Some(134_217_728.0)),
            ("1Gi", Some(1_073_741_824.0)),
            ("1G", Some(1e9)),
            ("2k", Some(2000.0)),
            ("1e3", Some(1000.0)),
            ("", None),
            ("Mi", None),
            ("12Zi", None),
            ("abc", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).ok(), *want, "{input}");
        }
        assert_eq!(cpu_millis("250m").unwrap(), 250);
        assert_eq!(cpu_millis("2").unwrap(), 2000);
        assert_eq!(bytes("64Ki").unwrap(), 65536);
    }
}
