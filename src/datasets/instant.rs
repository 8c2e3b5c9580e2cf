//! An instant as a vendor sends it: an RFC 3339 timestamp, the `DateTime` scalar of every
//! GraphQL vendor, parsed into UTC.
//!
//! A Retarus record holds a dozen instants, and chrono's general parser (which `DateTime<Utc>`'s
//! own `Deserialize` runs) was the largest single share of decoding a page. The one shape the
//! vendors send, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, is read here digit by digit; anything
//! else (a leap second, a missing offset, lower-case or space separators chrono accepts) goes to
//! chrono, so what is accepted and what it means are exactly chrono's (a test compares the two).

use std::fmt;
use std::ops::Deref;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::rows::Column;

/// An instant from a vendor's answer, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub DateTime<Utc>);

impl Instant {
    /// Parses an RFC 3339 timestamp as chrono's `DateTime<Utc>` does, the common shape fast.
    pub fn parse(text: &str) -> Option<Instant> {
        parse_common(text)
            .or_else(|| text.parse::<DateTime<Utc>>().ok())
            .map(Instant)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `None` for any other shape (and for values out of
/// range, such as a leap second), which chrono then reads.
fn parse_common(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(number(0, 4)?).ok()?, number(5, 7)?, number(8, 10)?)?;
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let mut at = 19;
    let mut nanos = 0u32;
    if b[at] == b'.' {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            // Digits past the ninth are below a nanosecond: chrono drops them too.
            if at - start < 9 {
                nanos = nanos * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        let digits = at - start;
        if digits == 0 {
            return None;
        }
        nanos *= 10u32.pow(9u32.saturating_sub(u32::try_from(digits).ok()?));
    }
    let offset_seconds = match &b[at..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hours = number(at + 1, at + 3)?;
            let minutes = number(at + 4, at + 6)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local = date.and_time(time);
    let utc = local.checked_sub_signed(TimeDelta::seconds(offset_seconds))?;
    Some(utc.and_utc())
}

impl Deref for Instant {
    type Target = DateTime<Utc>;
    fn deref(&self) -> &DateTime<Utc> {
        &self.0
    }
}

impl From<DateTime<Utc>> for Instant {
    fn from(at: DateTime<Utc>) -> Instant {
        Instant(at)
    }
}

impl From<Instant> for DateTime<Utc> {
    fn from(at: Instant) -> DateTime<Utc> {
        at.0
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// As `DateTime<Utc>` serializes (a query's variables).
impl Serialize for Instant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Instant, D::Error> {
        struct InstantVisitor;
        impl Visitor<'_> for InstantVisitor {
            type Value = Instant;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Instant, E> {
                Instant::parse(text).ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
            }
        }
        deserializer.deserialize_str(InstantVisitor)
    }
}

/// Stored as the instant it is.
impl Column for Instant {
    fn sql_types() -> &'static [&'static str] {
        DateTime::<Utc>::sql_types()
    }
    fn write_copy(&self, out: &mut String) {
        self.0.write_copy(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path and chrono agree on every shape: same instant, or both refuse.
    #[test]
    fn reads_what_chrono_reads_and_refuses_what_it_refuses() {
        let texts = [
            "2026-03-01T10:20:30Z",
            "2026-03-01T10:20:30.5Z",
            "2026-03-01T10:20:30.123Z",
            "2026-03-01T10:20:30.123456789Z",
            "2026-03-01T10:20:30.1234567891234Z",
            "2026-03-01T10:20:30+02:00",
            "2026-03-01T00:20:30.25-05:30",
            "2026-12-31T23:59:59.999+00:00",
            "2024-02-29T12:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "2026-06-30T23:59:60Z",
            "2026-06-30T23:59:60.5+01:00",
            "2026-03-01t10:20:30z",
            "2026-03-01 10:20:30Z",
            "2026-03-01T10:20:30",
            "2026-03-01T10:20:30.Z",
            "2026-02-30T10:20:30Z",
            "2025-02-29T10:20:30Z",
            "2026-13-01T10:20:30Z",
            "2026-03-01T24:00:00Z",
            "2026-03-01T10:61:30Z",
            "2026-03-01T10:20:30+24:00",
            "2026-03-01T10:20:30+02:60",
            "2026-03-01T10:20:30+0200",
            "2026-03-01T10:20:30+02",
            "2026-03-01T10:20:30ZZ",
            "2026-03-01T10:20:30.12a3Z",
            "2026-3-01T10:20:30Z",
            "+2026-03-01T10:20:30Z",
            "2026-03-01T10:20:30\u{00e9}",
            "",
            "not a date",
        ];
        for text in texts {
            let chrono = text.parse::<DateTime<Utc>>().ok();
            assert_eq!(Instant::parse(text).map(|i| i.0), chrono, "{text:?}");
            if let Some(fast) = parse_common(text) {
                assert_eq!(Some(fast), chrono, "{text:?} (fast path)");
            }
        }
        // The common shapes take the fast path.
        for text in &texts[..8] {
            assert!(parse_common(text).is_some(), "{text:?}");
        }
    }

    #[test]
    fn an_answer_field_that_is_no_instant_fails_naming_it() {
        let error = serde_json::from_str::<Instant>(r#""yesterday""#).unwrap_err();
        assert!(error.to_string().contains("\"yesterday\""), "{error}");
        assert!(error.to_string().contains("RFC 3339"), "{error}");
        let at: Instant = serde_json::from_str(r#""2026-03-01T10:20:30.5+02:00""#).unwrap();
        assert_eq!(
            serde_json::to_string(&at).unwrap(),
            r#""2026-03-01T08:20:30.500Z""#
        );
    }
}
