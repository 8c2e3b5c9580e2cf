//! A fixed-window request limiter with a call log, shared by the vendors that publish a rate limit
//! (Roubler: 100 calls per 60 s, Retently: 150 requests per minute).
//!
//! The limiter answers two questions: what the vendor tells the client (limit, remaining, seconds
//! until the window resets, and whether it blocks), and what the client actually did. The second
//! comes from the call log: [`RateLimiter::max_calls_in_any_window`] slides a window over every
//! recorded call, so a test can prove a client stayed under the limit even across the vendor's
//! fixed-window boundaries (where a fixed-window counter would let 2 × limit through).
//!
//! Time is `tokio::time::Instant`, so a test that pauses and advances tokio's clock compresses the
//! windows along with everything else.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Whether the limiter only reports or also refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitMode {
    /// Count and report, never block (Roubler's documented current behaviour).
    #[default]
    Monitoring,
    /// Over the limit → 429 with `Retry-After`.
    Enforcing,
}

/// How the vendor writes "when the window resets" in `X-RateLimit-Reset` and `Retry-After`.
/// Vendors disagree; a client must read all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetFormat {
    /// Whole seconds until the reset, rounded up (default).
    #[default]
    Seconds,
    /// The reset instant as Unix epoch seconds, rounded up.
    EpochSeconds,
    /// The reset instant as an HTTP date (RFC 9110 IMF-fixdate), rounded up to the second.
    HttpDate,
}

/// Which header names carry the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderFamily {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset` (default; what Roubler documents).
    #[default]
    XRateLimit,
    /// The IETF draft's `RateLimit-Limit`, `-Remaining`, `-Reset`.
    Ietf,
}

/// One request as the vendor saw it.
#[derive(Debug, Clone, Copy)]
pub struct CallRecord {
    /// Tokio clock (follows `tokio::time::pause`), used for window arithmetic.
    pub at: Instant,
    /// Wall clock, for humans reading a failed test.
    pub utc: DateTime<Utc>,
    /// False when this call was answered 429.
    pub allowed: bool,
}

/// What the limiter decided for one call, and the numbers to put in the response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub limit: u32,
    /// Calls left in the current window after this one, floored at 0.
    pub remaining: u32,
    /// Whole seconds until the current window resets, at least 1.
    pub reset_secs: u64,
    /// True when the call must be refused (enforcing mode, over the limit).
    pub blocked: bool,
    /// The reset as the configured [`ResetFormat`] writes it.
    pub reset_text: String,
}

/// Shared by the vendor's middleware (records and decides on every call) and its handle (tests
/// read the log and switch limit or mode at run time). One mutex: every call takes it briefly.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Mutex<Window>>,
}

struct Window {
    limit: u32,
    window: Duration,
    mode: RateLimitMode,
    /// Start of the current fixed window; a window opens with the first call after the last one ended.
    window_start: Option<Instant>,
    /// Calls counted in the current window (refused calls are not counted).
    used: u32,
    log: Vec<CallRecord>,
    refused: u64,
    reset_format: ResetFormat,
    family: HeaderFamily,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration, mode: RateLimitMode) -> Self {
        RateLimiter {
            inner: Arc::new(Mutex::new(Window {
                limit,
                window: window.max(Duration::from_millis(1)),
                mode,
                window_start: None,
                used: 0,
                log: Vec::new(),
                refused: 0,
                reset_format: ResetFormat::default(),
                family: HeaderFamily::default(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one call and decides about it.
    pub fn check(&self) -> Decision {
        let now = Instant::now();
        let mut state = self.lock();
        let window = state.window;
        let start = match state.window_start {
            Some(start) if now.duration_since(start) < window => start,
            _ => {
                state.window_start = Some(now);
                state.used = 0;
                now
            }
        };
        let left = window.saturating_sub(now.duration_since(start));
        let reset_secs = left.as_millis().div_ceil(1000).max(1) as u64;
        let over = state.used >= state.limit;
        let blocked = over && state.mode == RateLimitMode::Enforcing;
        if blocked {
            state.refused += 1;
        } else {
            state.used = state.used.saturating_add(1);
        }
        state.log.push(CallRecord {
            at: now,
            utc: Utc::now(),
            allowed: !blocked,
        });
        let reset_at = Utc::now() + chrono::Duration::from_std(left).unwrap_or_default();
        // Rounded up, as the seconds are: a client going by it never comes back early.
        let reset_epoch = reset_at.timestamp() + i64::from(reset_at.timestamp_subsec_nanos() > 0);
        let reset_text = match state.reset_format {
            ResetFormat::Seconds => reset_secs.to_string(),
            ResetFormat::EpochSeconds => reset_epoch.to_string(),
            ResetFormat::HttpDate => DateTime::from_timestamp(reset_epoch, 0)
                .unwrap_or(reset_at)
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        };
        Decision {
            limit: state.limit,
            remaining: state.limit.saturating_sub(state.used),
            reset_secs,
            blocked,
            reset_text,
        }
    }

    /// How `X-RateLimit-Reset` and `Retry-After` are written from the next call on.
    pub fn set_reset_format(&self, format: ResetFormat) {
        self.lock().reset_format = format;
    }

    /// Which header names carry the limit from the next call on.
    pub fn set_header_family(&self, family: HeaderFamily) {
        self.lock().family = family;
    }

    fn family(&self) -> HeaderFamily {
        self.lock().family
    }

    /// Switches between monitoring and enforcing; takes effect from the next call.
    pub fn set_mode(&self, mode: RateLimitMode) {
        self.lock().mode = mode;
    }

    pub fn mode(&self) -> RateLimitMode {
        self.lock().mode
    }

    /// Changes limit and window and starts a fresh window with the next call.
    pub fn set_limit(&self, limit: u32, window: Duration) {
        let mut state = self.lock();
        state.limit = limit;
        state.window = window.max(Duration::from_millis(1));
        state.window_start = None;
        state.used = 0;
    }

    pub fn limit(&self) -> (u32, Duration) {
        let state = self.lock();
        (state.limit, state.window)
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().log.clone()
    }

    /// How many calls were answered 429.
    pub fn rate_limited_responses(&self) -> u64 {
        self.lock().refused
    }

    /// The most calls (refused ones included: the client still sent them) that fall into any
    /// half-open interval `[t, t + window)`, sliding over the whole log.
    pub fn max_calls_in_any_window(&self, window: Duration) -> usize {
        let state = self.lock();
        let mut times: Vec<Instant> = state.log.iter().map(|c| c.at).collect();
        times.sort();
        let mut best = 0;
        let mut first = 0;
        for (last, at) in times.iter().enumerate() {
            while at.duration_since(times[first]) >= window {
                first += 1;
            }
            best = best.max(last + 1 - first);
        }
        best
    }

    /// Forgets the log and the current window (limit and mode stay).
    pub fn reset(&self) {
        let mut state = self.lock();
        state.log.clear();
        state.refused = 0;
        state.window_start = None;
        state.used = 0;
    }
}

/// The state of [`enforce`]: the limiter plus the vendor's way of saying "slow down".
#[derive(Clone)]
pub struct RateLimitLayer {
    pub limiter: RateLimiter,
    /// Send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` on every answer
    /// (Roubler documents that it does; Retently does not).
    pub send_headers: bool,
    /// The JSON body of a 429.
    pub refusal: serde_json::Value,
}

/// Axum middleware: `axum::middleware::from_fn_with_state(layer, ratelimit::enforce)`. Put it
/// outside the fault injection, so that injected failures count as calls, as at a real gateway.
pub async fn enforce(State(layer): State<RateLimitLayer>, request: Request, next: Next) -> Response {
    let decision = layer.limiter.check();
    let mut response = if decision.blocked {
        let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(layer.refusal.clone())).into_response();
        // Retry-After is delay-seconds or an HTTP date (RFC 9110 §10.2.3), never an epoch.
        let retry_after = match layer.limiter.lock().reset_format {
            ResetFormat::HttpDate => decision.reset_text.clone(),
            _ => decision.reset_secs.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&retry_after) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    } else {
        next.run(request).await
    };
    if layer.send_headers {
        let names = match layer.limiter.family() {
            HeaderFamily::XRateLimit => ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"],
            HeaderFamily::Ietf => ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
        };
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static(names[0]),
            HeaderValue::from(decision.limit),
        );
        headers.insert(
            HeaderName::from_static(names[1]),
            HeaderValue::from(decision.remaining),
        );
        if let Ok(value) = HeaderValue::from_str(&decision.reset_text) {
            headers.insert(HeaderName::from_static(names[2]), value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_sliding_maximum_sees_bursts_across_fixed_window_edges() {
        let limiter = RateLimiter::new(3, Duration::from_secs(10), RateLimitMode::Monitoring);
        limiter.check();
        tokio::time::advance(Duration::from_secs(8)).await;
        limiter.check();
        limiter.check();
        tokio::time::advance(Duration::from_secs(3)).await;
        let d = limiter.check();
        assert_eq!(d.remaining, 2, "a new fixed window started");
        limiter.check();
        assert_eq!(limiter.max_calls_in_any_window(Duration::from_secs(10)), 4);
        assert_eq!(limiter.max_calls_in_any_window(Duration::from_secs(1)), 2);
    }
}
