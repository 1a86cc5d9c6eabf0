//! Byte sizes (`512m`, `1g`, `2GiB`, `1024`) as docker-compose reads them.

/// Parses a size. Units are powers of 1024, as docker-compose treats `k`, `m` and `g`;
/// the suffixes `b`, `ib` and `iB` after the unit are accepted and change nothing.
pub(crate) fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (use forms like `512m`, `1g`, `2GiB`)"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("`{s}` has an unknown unit (use b, k, m, g or t)")),
    };
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes as u64)
}

/// A size for people: `1.5 GiB`, `12.0 MiB`, `512 B`.
pub(crate) fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Formats a size with the largest unit that divides it exactly (`256m`, `1g`, `1536`), in
/// a form `parse` reads back.
pub(crate) fn format(bytes: u64) -> String {
    for (unit, factor) in [
        ("t", 1u64 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("1024").unwrap(), 1024);
        assert_eq!(parse("512m").unwrap(), 512 << 20);
        assert_eq!(parse("1g").unwrap(), 1 << 30);
        assert_eq!(parse("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse("64MB").unwrap(), 64 << 20);
        assert_eq!(parse("1.5k").unwrap(), 1536);
        assert!(parse("12q").is_err());
        assert!(parse("lots").is_err());
    }

    #[test]
    fn formats_back() {
        assert_eq!(format(512 << 20), "512m");
        assert_eq!(format(2 << 30), "2g");
        assert_eq!(format(1536), "1536");
        assert_eq!(format(0), "0");
        for s in ["512m", "1536", "3k"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
