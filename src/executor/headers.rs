//! Reading what an upstream says about its rate limit: `X-RateLimit-*`, the IETF `RateLimit-*`
//! family (separate fields, the combined `RateLimit: limit=…, remaining=…, reset=…` field and
//! `RateLimit-Policy: 100;w=60`), and `Retry-After`.
//!
//! Vendors disagree on what `reset` means: most send seconds until the window resets, some an
//! epoch timestamp. A value above [`EPOCH_THRESHOLD_SECS`] cannot be a sensible number of seconds
//! to wait, so it is read as an epoch (and above [`EPOCH_MS_THRESHOLD`] as an epoch in ms). Every
//! value is turned into a duration from "now" here, so the limiter only deals with durations.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

/// A reset value above this (about 11.6 days in seconds) is an epoch timestamp in seconds.
pub const EPOCH_THRESHOLD_SECS: f64 = 1e6;
/// A reset value above this is an epoch timestamp in milliseconds (1e12 ms is the year 2001).
pub const EPOCH_MS_THRESHOLD: f64 = 1e12;

/// What one answer said about the source's rate budget; every field is optional because most
/// answers carry only some of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// Calls allowed per window.
    pub limit: Option<u32>,
    /// The window length, when the upstream names it (`;w=60` in a policy).
    pub window: Option<Duration>,
    /// Calls left in the current window.
    pub remaining: Option<u32>,
    /// Time until the current window resets, counted from when the answer was read.
    pub reset: Option<Duration>,
    /// `Retry-After`, as a duration from when the answer was read.
    pub retry_after: Option<Duration>,
}

impl RateHeaders {
    /// Parses every known family; where both are present, `X-RateLimit-*` wins (it is what the
    /// vendors we read document).
    pub fn parse(headers: &HeaderMap, now: DateTime<Utc>) -> RateHeaders {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let mut parsed = RateHeaders::default();

        // The combined IETF field first, so the separate fields can override it.
        if let Some(combined) = text("ratelimit") {
            for part in combined.split([',', ';']) {
                let Some((key, value)) = part.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "limit" | "l" => parsed.limit = first_count(value),
                    "remaining" | "r" => parsed.remaining = first_count(value),
                    "reset" | "t" => parsed.reset = parse_reset(value, now),
                    _ => {}
                }
            }
        }
        if let Some(policy) = text("ratelimit-policy") {
            let (limit, window) = parse_limit(policy);
            parsed.limit = limit.or(parsed.limit);
            parsed.window = window.or(parsed.window);
        }
        for prefix in ["ratelimit-", "x-ratelimit-"] {
            if let Some(value) = text(&format!("{prefix}limit")) {
                let (limit, window) = parse_limit(value);
                parsed.limit = limit.or(parsed.limit);
                parsed.window = window.or(parsed.window);
            }
            if let Some(value) = text(&format!("{prefix}remaining")) {
                parsed.remaining = first_count(value).or(parsed.remaining);
            }
            if let Some(value) = text(&format!("{prefix}reset")) {
                parsed.reset = parse_reset(value, now).or(parsed.reset);
            }
        }
        parsed.retry_after = text("retry-after").and_then(|v| parse_retry_after(v, now));
        parsed
    }

    /// The same headers with every wait held to `cap`, and which header asked for more (its name
    /// and the duration it asked for): a vendor's `Retry-After: 999999999` must neither hold a
    /// source back for decades nor be silently shortened.
    pub fn capped(mut self, cap: Duration) -> (RateHeaders, Option<Overlong>) {
        let mut overlong = None;
        if let Some(reset) = self.reset
            && reset > cap
        {
            overlong = Some(Overlong {
                header: "reset",
                asked: reset,
            });
            self.reset = Some(cap);
        }
        if let Some(after) = self.retry_after
            && after > cap
        {
            overlong = Some(Overlong {
                header: "Retry-After",
                asked: after,
            });
            self.retry_after = Some(cap);
        }
        (self, overlong)
    }

    /// Whether the answer said anything about the budget at all.
    pub fn is_empty(&self) -> bool {
        *self == RateHeaders::default()
    }
}

/// A header that asked for a wait longer than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlong {
    /// `Retry-After` or `reset` (any family's reset field).
    pub header: &'static str,
    /// What it asked for (saturated at `Duration::MAX`).
    pub asked: Duration,
}

/// `100`, `100, 100;w=60` or `100;w=60`: the first count, and the window of the first policy
/// that names one.
fn parse_limit(value: &str) -> (Option<u32>, Option<Duration>) {
    let limit = first_count(value);
    let window = value
        .split([',', ';'])
        .filter_map(|part| part.trim().strip_prefix("w="))
        .find_map(|w| w.trim().parse::<f64>().ok())
        .filter(|w| *w > 0.0)
        .and_then(|w| Duration::try_from_secs_f64(w).ok());
    (limit, window)
}

/// The leading integer of a field (`"25"`, `"25, 25;w=1"`); negative or junk values are ignored.
fn first_count(value: &str) -> Option<u32> {
    let digits: String = value.trim().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Seconds until reset, an epoch in seconds or milliseconds, or an HTTP date; a reset in the
/// past is zero.
pub fn parse_reset(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let Ok(number) = value.trim().parse::<f64>() else {
        let at = DateTime::parse_from_rfc2822(value.trim())
            .ok()?
            .with_timezone(&Utc);
        return Some((at - now).to_std().unwrap_or(Duration::ZERO));
    };
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    let now_secs = now.timestamp_millis() as f64 / 1000.0;
    let secs = if number > EPOCH_MS_THRESHOLD {
        number / 1000.0 - now_secs
    } else if number > EPOCH_THRESHOLD_SECS {
        number - now_secs
    } else {
        number
    };
    Some(saturating_secs(secs))
}

/// A non-negative number of seconds as a duration; a value beyond what a `Duration` holds (1e30)
/// saturates, so that the wait cap (not a panic, and not silence) deals with it.
fn saturating_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// `Retry-After`: delay-seconds (decimals tolerated) or an HTTP date. A negative or non-numeric
/// value is junk (`None`); a huge one saturates (the wait cap refuses it).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| saturating_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        map
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).expect("valid timestamp")
    }

    #[test]
    fn x_ratelimit_headers_with_seconds_until_reset_are_read() {
        let parsed = RateHeaders::parse(
            &headers(&[
                ("X-RateLimit-Limit", "100"),
                ("X-RateLimit-Remaining", "7"),
                ("X-RateLimit-Reset", "42"),
            ]),
            now(),
        );
        assert_eq!(parsed.limit, Some(100));
        assert_eq!(parsed.remaining, Some(7));
        assert_eq!(parsed.reset, Some(Duration::from_secs(42)));
        assert_eq!(parsed.retry_after, None);
    }

    #[test]
    fn a_reset_above_a_million_is_an_epoch_timestamp() {
        let epoch = (now().timestamp() + 30).to_string();
        let parsed = RateHeaders::parse(&headers(&[("x-ratelimit-reset", &epoch)]), now());
        assert_eq!(parsed.reset, Some(Duration::from_secs(30)));
        let epoch_ms = ((now().timestamp() + 5) * 1000).to_string();
        let parsed = RateHeaders::parse(&headers(&[("x-ratelimit-reset", &epoch_ms)]), now());
        assert_eq!(parsed.reset, Some(Duration::from_secs(5)));
    }

    #[test]
    fn an_epoch_reset_in_the_past_means_no_wait() {
        let epoch = (now().timestamp() - 30).to_string();
        let parsed = RateHeaders::parse(&headers(&[("x-ratelimit-reset", &epoch)]), now());
        assert_eq!(parsed.reset, Some(Duration::ZERO));
    }

    #[test]
    fn the_ietf_family_is_read_as_separate_fields_and_as_one_field() {
        let separate = RateHeaders::parse(
            &headers(&[
                ("RateLimit-Limit", "150"),
                ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", "12"),
                ("RateLimit-Policy", "150;w=60"),
            ]),
            now(),
        );
        assert_eq!(separate.limit, Some(150));
        assert_eq!(separate.remaining, Some(0));
        assert_eq!(separate.reset, Some(Duration::from_secs(12)));
        assert_eq!(separate.window, Some(Duration::from_secs(60)));

        let combined = RateHeaders::parse(
            &headers(&[("RateLimit", "limit=10, remaining=3, reset=2")]),
            now(),
        );
        assert_eq!(combined.limit, Some(10));
        assert_eq!(combined.remaining, Some(3));
        assert_eq!(combined.reset, Some(Duration::from_secs(2)));
    }

    #[test]
    fn x_ratelimit_wins_over_the_ietf_family_when_both_are_sent() {
        let parsed = RateHeaders::parse(
            &headers(&[("RateLimit-Limit", "500"), ("X-RateLimit-Limit", "100, 100;w=60")]),
            now(),
        );
        assert_eq!(parsed.limit, Some(100));
        assert_eq!(parsed.window, Some(Duration::from_secs(60)));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let seconds = RateHeaders::parse(&headers(&[("Retry-After", "3")]), now());
        assert_eq!(seconds.retry_after, Some(Duration::from_secs(3)));
        let zero = RateHeaders::parse(&headers(&[("Retry-After", "0")]), now());
        assert_eq!(
            zero.retry_after,
            Some(Duration::ZERO),
            "the floor is the limiter's job"
        );
        let date = (now() + chrono::Duration::seconds(20))
            .to_rfc2822()
            .replace("+0000", "GMT");
        let dated = RateHeaders::parse(&headers(&[("Retry-After", &date)]), now());
        assert_eq!(dated.retry_after, Some(Duration::from_secs(20)));
    }

    #[test]
    fn values_too_large_for_a_duration_saturate_instead_of_panicking() {
        // Found by fuzzing (fuzz/ rate_headers): these panicked in Duration::from_secs_f64. They
        // saturate, so the wait cap refuses them loudly instead of the call ignoring them.
        let parsed = RateHeaders::parse(
            &headers(&[
                ("Retry-After", "1570000030700000300005"),
                ("X-RateLimit-Reset", "1e30"),
                ("RateLimit-Policy", "10;w=1e300"),
            ]),
            now(),
        );
        assert_eq!(parsed.retry_after, Some(Duration::MAX));
        assert_eq!(parsed.reset, Some(Duration::MAX));
        assert_eq!(parsed.window, None);
        assert_eq!(parsed.limit, Some(10));
        let (capped, overlong) = parsed.capped(Duration::from_secs(900));
        assert_eq!(capped.retry_after, Some(Duration::from_secs(900)));
        assert_eq!(capped.reset, Some(Duration::from_secs(900)));
        assert_eq!(overlong.map(|o| o.header), Some("Retry-After"));
        assert_eq!(
            parse_retry_after("10000000000000000000", now()).map(|d| d.as_secs()),
            Some(10_000_000_000_000_000_000)
        );
        assert_eq!(parse_retry_after("-1", now()), None);
        assert_eq!(parse_retry_after("NaN", now()), None);
    }

    #[test]
    fn junk_values_are_ignored_rather_than_guessed() {
        let parsed = RateHeaders::parse(
            &headers(&[
                ("X-RateLimit-Limit", "lots"),
                ("X-RateLimit-Remaining", "-1"),
                ("X-RateLimit-Reset", "soon"),
                ("Retry-After", "later"),
            ]),
            now(),
        );
        assert!(parsed.is_empty(), "{parsed:?}");
    }
}
