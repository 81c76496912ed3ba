//! Go-style durations as distribution writes them: `168h`, `1h30m`, `500ms`, `10s`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// For `#[serde(with = "duration")]`: a Go-style string, or a plain number of milliseconds (as
/// the administration guide writes some of them).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map(Duration::from_millis).map_err(serde::de::Error::custom)
        }
        Raw::Text(s) => {
            parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a duration like 168h, 30m or 10s")))
        }
    }
}

pub fn parse(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += Duration::try_from_secs_f64(value * unit).ok()?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn go_durations() {
        assert_eq!(parse("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse("1h30m").unwrap().as_secs(), 5400);
        assert!(parse("5 days").is_none());
        assert!(parse("").is_none());
    }
}
