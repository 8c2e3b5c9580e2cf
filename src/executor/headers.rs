//! Reading what an upstream says about its rate limit: `X-RateLimit-*`, the IETF `RateLimit-*`
//! family (separate fields, the combined `RateLimit: limit=…, remaining=…, reset=…` field and
//! `RateLimit-Policy: 100;w=60`), and `Retry-After`.
//!
//! Vendors disagree on what `reset` means: most send seconds until the window resets, some an
//! epoch timestamp. A value above [`EPOCH_THRESHOLD_SECS`] cannot be a sensible number of seconds
//! to wait, so it is read as an epoch (and above [`EPOCH_MS_THRESHOLD`] as an epoch in ms).
//!
//! # Bounded values
//!
//! Every number taken from these headers enters through a type that states its bounds
//! ([`Calls`], [`Wait`], [`PolicyWindow`], [`Reset`]); `docs/bounds.md` lists them. Parsing
//! saturates or clamps instead of panicking; what a value then *means* is bounded once more where
//! it is used: every wait by `rate_budget.max_wait_secs` ([`RateHeaders::capped`]), a learned
//! window by the same cap (see `limiter::Learned`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// A reset value above this (about 11.6 days in seconds) is an epoch timestamp in seconds.
pub const EPOCH_THRESHOLD_SECS: f64 = 1e6;
/// A reset value above this is an epoch timestamp in milliseconds (1e12 ms is the year 2001).
pub const EPOCH_MS_THRESHOLD: f64 = 1e12;

/// A number of calls from a header (a limit, or what remains of it): `0..=Calls::MAX`. A larger
/// value is clamped to the bound (no vendor allows a million calls in one window, and a limit
/// that large no longer limits anything); junk, negative or fractional values are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Calls(u32);

impl Calls {
    /// The largest count a header can state.
    pub const MAX: u32 = 1_000_000;

    /// `calls`, clamped to [`Calls::MAX`].
    pub fn new(calls: u64) -> Calls {
        Calls(u32::try_from(calls.min(u64::from(Calls::MAX))).unwrap_or(Calls::MAX))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The leading integer of a field (`"25"`, `"25, 25;w=1"`).
    fn parse(value: &str) -> Option<Calls> {
        let digits: String = value.trim().chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return None;
        }
        // Only digits: a parse failure is an overflow of u64, which clamps like any large value.
        Some(Calls::new(digits.parse::<u64>().unwrap_or(u64::MAX)))
    }
}

/// A wait from a header (`Retry-After`, a reset): `0..=Wait::MAX`. A value beyond the bound
/// (up to 1e300 seconds) saturates at it, so the wait cap refuses it loudly instead of the
/// value overflowing an instant; negative, NaN or junk values are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wait(Duration);

impl Wait {
    /// 100 years: far beyond any cap (`rate_budget.max_wait_secs` is at most a day).
    pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    /// `wait`, saturated at [`Wait::MAX`].
    pub fn new(wait: Duration) -> Wait {
        Wait(wait.min(Wait::MAX))
    }

    /// A non-negative number of seconds; `None` for NaN or a negative number.
    fn from_secs(secs: f64) -> Option<Wait> {
        if secs.is_nan() || secs < 0.0 {
            return None;
        }
        let wait = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
        Some(Wait::new(wait))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

/// A window a vendor names (`;w=60` in a policy): `(0, PolicyWindow::MAX]` seconds. Zero,
/// negative or junk windows are ignored; a longer one is clamped to the bound. Where it is used,
/// a window beyond `rate_budget.max_wait_secs` is held to that cap (see `limiter::Learned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyWindow(Duration);

impl PolicyWindow {
    /// A year: a "window" longer than that is a block, not a rate.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

    pub fn new(window: Duration) -> Option<PolicyWindow> {
        (!window.is_zero()).then(|| PolicyWindow(window.min(PolicyWindow::MAX)))
    }

    fn from_secs(secs: f64) -> Option<PolicyWindow> {
        if secs.is_nan() || secs <= 0.0 {
            return None;
        }
        PolicyWindow::new(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

/// When the current window resets, as one answer said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// From when the answer was read until the reset.
    pub wait: Wait,
    /// The vendor wrote an instant (an epoch, an HTTP date) rather than a delay: every answer of
    /// one window then names the same instant.
    pub absolute: bool,
    /// How much later than the true reset the value may lie: vendors round up to whole seconds
    /// (1 s), or write fractions or milliseconds (1 ms).
    pub resolution: Duration,
}

impl Reset {
    /// A delay of whole seconds from now (what most vendors send, and what tests build).
    pub fn secs(secs: u64) -> Reset {
        Reset {
            wait: Wait::new(Duration::from_secs(secs)),
            absolute: false,
            resolution: WHOLE_SECOND,
        }
    }

    pub fn get(self) -> Duration {
        self.wait.get()
    }
}

const WHOLE_SECOND: Duration = Duration::from_secs(1);
const FINE: Duration = Duration::from_millis(1);

/// What one answer said about the source's rate budget; every field is optional because most
/// answers carry only some of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// Calls allowed per window.
    pub limit: Option<Calls>,
    /// The window length, when the upstream names it (`;w=60` in a policy).
    pub window: Option<PolicyWindow>,
    /// The header that named the window, and the limit it named with it (for messages).
    pub window_header: Option<&'static str>,
    pub window_calls: Option<Calls>,
    /// Calls left in the current window.
    pub remaining: Option<Calls>,
    /// When the current window resets, counted from when the answer was read.
    pub reset: Option<Reset>,
    /// The reset asked for more than the wait cap and was cut to it: it tells nothing about the
    /// window.
    pub reset_capped: bool,
    /// `Retry-After`, as a duration from when the answer was read.
    pub retry_after: Option<Wait>,
    /// When the call was sent and when its answer's headers were read (this process's clock):
    /// the upstream counted the call somewhere in between.
    pub sent_at: Option<Instant>,
    pub read_at: Option<Instant>,
    /// The answer refused the call for its rate (429): the vendor counted it over its limit.
    pub refused: bool,
}

impl RateHeaders {
    /// Parses every known family; where both are present, `X-RateLimit-*` wins (it is what the
    /// vendors we read document). The answer counts as read now.
    pub fn parse(headers: &HeaderMap, now: DateTime<Utc>) -> RateHeaders {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let mut parsed = RateHeaders {
            read_at: Some(Instant::now()),
            ..RateHeaders::default()
        };

        // The combined IETF field first, so the separate fields can override it.
        if let Some(combined) = text("ratelimit") {
            for part in combined.split([',', ';']) {
                let Some((key, value)) = part.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "limit" | "l" => parsed.limit = Calls::parse(value),
                    "remaining" | "r" => parsed.remaining = Calls::parse(value),
                    "reset" | "t" => parsed.reset = parse_reset(value, now),
                    _ => {}
                }
            }
        }
        if let Some(policy) = text("ratelimit-policy") {
            parsed.read_limit(policy, "RateLimit-Policy");
        }
        for (prefix, name) in [
            ("ratelimit-", "RateLimit-Limit"),
            ("x-ratelimit-", "X-RateLimit-Limit"),
        ] {
            if let Some(value) = text(&format!("{prefix}limit")) {
                parsed.read_limit(value, name);
            }
            if let Some(value) = text(&format!("{prefix}remaining")) {
                parsed.remaining = Calls::parse(value).or(parsed.remaining);
            }
            if let Some(value) = text(&format!("{prefix}reset")) {
                parsed.reset = parse_reset(value, now).or(parsed.reset);
            }
        }
        parsed.retry_after = text("retry-after").and_then(|v| parse_retry_after(v, now));
        parsed
    }

    /// `100`, `100, 100;w=60` or `100;w=60` from `header`.
    fn read_limit(&mut self, value: &str, header: &'static str) {
        let (limit, window) = parse_limit(value);
        self.limit = limit.or(self.limit);
        if window.is_some() {
            self.window = window;
            self.window_header = Some(header);
            self.window_calls = limit;
        }
    }

    /// The same headers, stamped with when the call was sent.
    pub fn sent_at(mut self, sent: Instant) -> RateHeaders {
        self.sent_at = Some(sent);
        self
    }

    /// The wait a refusal asks for: `Retry-After` (whole seconds), unless the reset names the
    /// same instant more precisely — it lies within the second `Retry-After` was rounded up to —
    /// when the reset stands, plus `skew` for an instant read on the vendor's clock. A reset
    /// before that second is another instant (a penalty beyond the window): `Retry-After` stands.
    pub fn retry_wait(&self, skew: Duration) -> Option<Duration> {
        let asked = self.retry_after?.get();
        let Some(reset) = self.reset else {
            return Some(asked);
        };
        let reset = reset.get() + if reset.absolute { skew } else { Duration::ZERO };
        let same_instant = reset > asked.saturating_sub(WHOLE_SECOND);
        Some(if same_instant { reset.min(asked) } else { asked })
    }

    /// The wait an answer refusing service asks for when nothing else learns from it (a token
    /// endpoint's, which no limiter follows): [`RateHeaders::retry_wait`], else for a refusal
    /// for its rate (a 429) the reset of the window it was refused in.
    pub fn refusal_wait(&self, skew: Duration) -> Option<Duration> {
        self.retry_wait(skew).or_else(|| {
            let reset = self.reset.filter(|_| self.refused)?;
            Some(reset.get() + if reset.absolute { skew } else { Duration::ZERO })
        })
    }

    /// The same headers, marked as the answer to a call refused for its rate (a 429).
    pub fn refused(mut self, refused: bool) -> RateHeaders {
        self.refused = refused;
        self
    }

    /// The same headers with every wait held to `cap`, and which header asked for more (its name
    /// and the duration it asked for): a vendor's `Retry-After: 999999999` must neither hold a
    /// source back for decades nor be silently shortened.
    pub fn capped(mut self, cap: Duration) -> (RateHeaders, Option<Overlong>) {
        let mut overlong = None;
        if let Some(reset) = self.reset
            && reset.get() > cap
        {
            overlong = Some(Overlong {
                header: "reset",
                asked: reset.get(),
            });
            self.reset = Some(Reset {
                wait: Wait::new(cap),
                ..reset
            });
            self.reset_capped = true;
        }
        if let Some(after) = self.retry_after
            && after.get() > cap
        {
            overlong = Some(Overlong {
                header: "Retry-After",
                asked: after.get(),
            });
            self.retry_after = Some(Wait::new(cap));
        }
        (self, overlong)
    }

    /// Whether the answer said anything about the budget at all.
    pub fn is_empty(&self) -> bool {
        self.limit.is_none()
            && self.window.is_none()
            && self.remaining.is_none()
            && self.reset.is_none()
            && self.retry_after.is_none()
    }
}

/// A header that asked for a wait longer than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlong {
    /// `Retry-After` or `reset` (any family's reset field).
    pub header: &'static str,
    /// What it asked for (saturated at [`Wait::MAX`]).
    pub asked: Duration,
}

/// `100`, `100, 100;w=60` or `100;w=60`: the first count, and the window of the first policy
/// that names one.
fn parse_limit(value: &str) -> (Option<Calls>, Option<PolicyWindow>) {
    let limit = Calls::parse(value);
    let window = value
        .split([',', ';'])
        .filter_map(|part| part.trim().strip_prefix("w="))
        .find_map(|w| w.trim().parse::<f64>().ok())
        .and_then(PolicyWindow::from_secs);
    (limit, window)
}

/// Seconds until reset, an epoch in seconds or milliseconds, or an HTTP date; a reset in the
/// past is zero.
pub fn parse_reset(value: &str, now: DateTime<Utc>) -> Option<Reset> {
    let value = value.trim();
    let Ok(number) = value.parse::<f64>() else {
        let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
        return Some(Reset {
            wait: Wait::new((at - now).to_std().unwrap_or(Duration::ZERO)),
            absolute: true,
            resolution: WHOLE_SECOND,
        });
    };
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    let whole = number.fract() == 0.0;
    let now_secs = now.timestamp_millis() as f64 / 1000.0;
    let (secs, absolute, resolution) = if number > EPOCH_MS_THRESHOLD {
        (number / 1000.0 - now_secs, true, FINE)
    } else if number > EPOCH_THRESHOLD_SECS {
        (number - now_secs, true, if whole { WHOLE_SECOND } else { FINE })
    } else {
        (number, false, if whole { WHOLE_SECOND } else { FINE })
    };
    Some(Reset {
        wait: Wait::from_secs(secs.max(0.0))?,
        absolute,
        resolution,
    })
}

/// `Retry-After`: delay-seconds (decimals tolerated) or an HTTP date. A negative or non-numeric
/// value is junk (`None`); a huge one saturates (the wait cap refuses it).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Wait> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Wait::from_secs(secs);
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some(Wait::new((at - now).to_std().unwrap_or(Duration::ZERO)))
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
        assert_eq!(parsed.limit.map(Calls::get), Some(100));
        assert_eq!(parsed.remaining.map(Calls::get), Some(7));
        assert_eq!(parsed.reset.map(Reset::get), Some(Duration::from_secs(42)));
        assert_eq!(parsed.retry_after, None);
    }

    #[test]
    fn a_reset_above_a_million_is_an_epoch_timestamp() {
        let epoch = (now().timestamp() + 30).to_string();
        let parsed = RateHeaders::parse(&headers(&[("x-ratelimit-reset", &epoch)]), now());
        assert_eq!(parsed.reset.map(Reset::get), Some(Duration::from_secs(30)));
        let epoch_ms = ((now().timestamp() + 5) * 1000).to_string();
        let parsed = RateHeaders::parse(&headers(&[("x-ratelimit-reset", &epoch_ms)]), now());
        assert_eq!(parsed.reset.map(Reset::get), Some(Duration::from_secs(5)));
    }

    #[test]
    fn an_epoch_reset_in_the_past_means_no_wait() {
        let epoch = (now().timestamp() - 30).to_string();
        let parsed = RateHeaders::parse(&headers(&[("x-ratelimit-reset", &epoch)]), now());
        assert_eq!(parsed.reset.map(Reset::get), Some(Duration::ZERO));
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
        assert_eq!(separate.limit.map(Calls::get), Some(150));
        assert_eq!(separate.remaining.map(Calls::get), Some(0));
        assert_eq!(separate.reset.map(Reset::get), Some(Duration::from_secs(12)));
        assert_eq!(
            separate.window.map(PolicyWindow::get),
            Some(Duration::from_secs(60))
        );

        let combined = RateHeaders::parse(
            &headers(&[("RateLimit", "limit=10, remaining=3, reset=2")]),
            now(),
        );
        assert_eq!(combined.limit.map(Calls::get), Some(10));
        assert_eq!(combined.remaining.map(Calls::get), Some(3));
        assert_eq!(combined.reset.map(Reset::get), Some(Duration::from_secs(2)));
    }

    #[test]
    fn x_ratelimit_wins_over_the_ietf_family_when_both_are_sent() {
        let parsed = RateHeaders::parse(
            &headers(&[("RateLimit-Limit", "500"), ("X-RateLimit-Limit", "100, 100;w=60")]),
            now(),
        );
        assert_eq!(parsed.limit.map(Calls::get), Some(100));
        assert_eq!(
            parsed.window.map(PolicyWindow::get),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let seconds = RateHeaders::parse(&headers(&[("Retry-After", "3")]), now());
        assert_eq!(seconds.retry_after.map(Wait::get), Some(Duration::from_secs(3)));
        let zero = RateHeaders::parse(&headers(&[("Retry-After", "0")]), now());
        assert_eq!(
            zero.retry_after.map(Wait::get),
            Some(Duration::ZERO),
            "the floor is the limiter's job"
        );
        let date = (now() + chrono::Duration::seconds(20))
            .to_rfc2822()
            .replace("+0000", "GMT");
        let dated = RateHeaders::parse(&headers(&[("Retry-After", &date)]), now());
        assert_eq!(dated.retry_after.map(Wait::get), Some(Duration::from_secs(20)));
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
        assert_eq!(parsed.retry_after.map(Wait::get), Some(Wait::MAX));
        assert_eq!(parsed.reset.map(Reset::get), Some(Wait::MAX));
        assert_eq!(parsed.window.map(PolicyWindow::get), Some(PolicyWindow::MAX));
        assert_eq!(parsed.limit.map(Calls::get), Some(10));
        let (capped, overlong) = parsed.capped(Duration::from_secs(900));
        assert_eq!(capped.retry_after.map(Wait::get), Some(Duration::from_secs(900)));
        assert_eq!(capped.reset.map(Reset::get), Some(Duration::from_secs(900)));
        assert_eq!(overlong.map(|o| o.header), Some("Retry-After"));
        assert_eq!(
            parse_retry_after("10000000000000000000", now()).map(Wait::get),
            Some(Wait::MAX)
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

    #[test]
    fn every_value_is_held_to_the_bound_its_type_states() {
        let parsed = RateHeaders::parse(
            &headers(&[
                ("X-RateLimit-Limit", "99999999999999999999999"),
                ("X-RateLimit-Remaining", "4294967296"),
                ("RateLimit-Policy", "1;w=0"),
            ]),
            now(),
        );
        assert_eq!(parsed.limit.map(Calls::get), Some(Calls::MAX));
        assert_eq!(parsed.remaining.map(Calls::get), Some(Calls::MAX));
        assert_eq!(parsed.window, None, "a window of zero is no window");
        let policy = RateHeaders::parse(&headers(&[("RateLimit-Policy", "1;w=1000000000000")]), now());
        assert_eq!(policy.limit.map(Calls::get), Some(1));
        assert_eq!(policy.window.map(PolicyWindow::get), Some(PolicyWindow::MAX));
        assert_eq!(policy.window_header, Some("RateLimit-Policy"));
    }

    #[test]
    fn a_reset_says_whether_it_is_an_instant_and_how_finely_it_is_rounded() {
        let delay = parse_reset("5", now()).expect("a delay");
        assert!(!delay.absolute);
        assert_eq!(delay.resolution, Duration::from_secs(1));
        let fraction = parse_reset("0.25", now()).expect("a fraction");
        assert_eq!(fraction.resolution, Duration::from_millis(1));
        let epoch = parse_reset(&(now().timestamp() + 6).to_string(), now()).expect("an epoch");
        assert!(epoch.absolute);
        assert_eq!(epoch.get(), Duration::from_secs(6));
        let date = (now() + chrono::Duration::seconds(9))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let dated = parse_reset(&date, now()).expect("a date");
        assert!(dated.absolute);
        assert_eq!(dated.get(), Duration::from_secs(9));
    }

    #[test]
    fn a_retry_after_rounded_up_gives_way_to_the_reset_it_names_but_not_to_an_earlier_one() {
        let skew = Duration::from_millis(30);
        let refusal = |retry_after: u64, reset_ms: u64, absolute: bool| RateHeaders {
            retry_after: Some(Wait::new(Duration::from_secs(retry_after))),
            reset: Some(Reset {
                wait: Wait::new(Duration::from_millis(reset_ms)),
                absolute,
                resolution: WHOLE_SECOND,
            }),
            ..RateHeaders::default()
        };
        // "1" for a reset 0.56 s away, written as an instant: the reset, and the skew.
        assert_eq!(
            refusal(1, 560, true).retry_wait(skew),
            Some(Duration::from_millis(590))
        );
        assert_eq!(
            refusal(1, 560, false).retry_wait(skew),
            Some(Duration::from_millis(560))
        );
        // A penalty beyond the window's reset: Retry-After stands.
        assert_eq!(
            refusal(10, 560, true).retry_wait(skew),
            Some(Duration::from_secs(10))
        );
        // A reset later than Retry-After asks for: never longer than asked.
        assert_eq!(
            refusal(1, 1990, true).retry_wait(skew),
            Some(Duration::from_secs(1))
        );
        assert_eq!(RateHeaders::default().retry_wait(skew), None);
    }
}
