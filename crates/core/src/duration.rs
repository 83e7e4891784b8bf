//! Durations as people write them in config and on the command line: `90s`, `15m`, `2h`, `1d`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole number of seconds, written with one unit, at most [`Span::MAX`]: every span can be
/// added to any time tidegate handles without overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(u64);

impl Span {
    /// The longest span anything may be given for: ten years. Longer is a typo or an attack,
    /// and this bound keeps `now + span` far inside the range of a date.
    pub const MAX: Span = Span(10 * 366 * 86_400);

    pub const fn seconds(s: u64) -> Span {
        Span(if s > Span::MAX.0 { Span::MAX.0 } else { s })
    }

    pub const fn minutes(m: u64) -> Span {
        Span::seconds(m.saturating_mul(60))
    }

    pub const fn hours(h: u64) -> Span {
        Span::seconds(h.saturating_mul(3600))
    }

    pub fn as_secs(self) -> u64 {
        self.0
    }

    pub fn to_time(self) -> time::Duration {
        // Spans are bounded by `MAX` when parsed; the `min` keeps one built in code bounded too.
        time::Duration::seconds(self.0.min(Span::MAX.0) as i64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {why} (write e.g. 90s, 15m, 2h or 1d)")]
pub struct SpanError {
    pub text: String,
    pub why: &'static str,
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(text: &str) -> Result<Span, SpanError> {
        let err = |why| SpanError {
            text: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| err("missing unit"))?;
        let (number, unit) = trimmed.split_at(split);
        if number.is_empty() {
            return Err(err("missing number"));
        }
        let n: u64 = number.parse().map_err(|_| err("longer than ten years"))?;
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(err("unknown unit")),
        };
        let seconds = n
            .checked_mul(scale)
            .filter(|s| *s <= Span::MAX.0)
            .ok_or_else(|| err("longer than ten years"))?;
        if seconds == 0 {
            return Err(err("must be longer than zero"));
        }
        Ok(Span(seconds))
    }
}

impl fmt::Display for Span {
    /// The largest unit that divides exactly: `2h`, `90m`, `45s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Span;

    #[test]
    fn parses_and_prints() {
        for (text, secs, shown) in [
            ("90s", 90, "90s"),
            ("15m", 900, "15m"),
            ("2h", 7200, "2h"),
            ("1d", 86_400, "1d"),
            ("120m", 7200, "2h"),
        ] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.as_secs(), secs);
            assert_eq!(span.to_string(), shown);
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "2",
            "h",
            "2x",
            "1.5h",
            "-1h",
            "0s",
            "99999999999999999999d",
            "18446744073709551615s",
            "99999999d",
            "3661d",
        ] {
            let err = bad.parse::<Span>().unwrap_err();
            assert!(err.to_string().contains("invalid duration"), "{bad}: {err}");
        }
    }
}
