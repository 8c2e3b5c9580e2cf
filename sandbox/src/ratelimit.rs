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
//! windows along with everything else. The "wall clock" that clock-aligned windows and epoch
//! resets refer to is the real one at start-up, advanced by tokio's clock from there.
//!
//! # Dialects
//!
//! Real APIs count and tell their limits differently, and a client must follow each of them
//! (issue 26). The knobs: how the window runs ([`WindowKind`]: fixed from the first call, fixed
//! to the clock, or a sliding log), how the reset is written ([`ResetFormat`]: delay seconds,
//! epoch seconds, an HTTP date — every whole-second value rounded up), and which header names
//! carry it all ([`HeaderFamily`]: `X-RateLimit-*`, the IETF separate fields with
//! `RateLimit-Policy`, or the IETF structured `RateLimit` field with `RateLimit-Policy`).

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
    /// The IETF draft's `RateLimit-Limit`, `-Remaining`, `-Reset`, and
    /// `RateLimit-Policy: <limit>;w=<window secs>`.
    Ietf,
    /// The IETF structured field `RateLimit: limit=<n>, remaining=<n>, reset=<n>` and
    /// `RateLimit-Policy: <limit>;w=<window secs>`.
    IetfStructured,
}

/// How the vendor's window runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowKind {
    /// A fixed window that opens with the first call after the last one ended (default; what
    /// the Roubler stand-ins do).
    #[default]
    FromFirstCall,
    /// Fixed windows on the clock: `[k × window, (k + 1) × window)` since the Unix epoch.
    Clock,
    /// A sliding log: a call is allowed when fewer than `limit` calls were counted in the last
    /// window; the reset is when the oldest of them leaves it (a slot frees).
    Sliding,
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
    /// The window, for `RateLimit-Policy`.
    pub window: Duration,
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
    /// Which clock window `used` counts ([`WindowKind::Clock`]).
    window_start_index: Option<i64>,
    /// Calls counted in the current window (refused calls are not counted).
    used: u32,
    /// Allowed calls of the last window ([`WindowKind::Sliding`]).
    counted: std::collections::VecDeque<Instant>,
    log: Vec<CallRecord>,
    refused: u64,
    reset_format: ResetFormat,
    family: HeaderFamily,
    kind: WindowKind,
    /// The wall clock at `epoch.0`: the clock windows and epoch resets are read from
    /// `epoch.1 + (now - epoch.0)`, so they follow tokio's paused clock too.
    epoch: (Instant, DateTime<Utc>),
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration, mode: RateLimitMode) -> Self {
        RateLimiter {
            inner: Arc::new(Mutex::new(Window {
                limit,
                window: window.max(Duration::from_millis(1)),
                mode,
                window_start: None,
                window_start_index: None,
                used: 0,
                log: Vec::new(),
                refused: 0,
                counted: std::collections::VecDeque::new(),
                reset_format: ResetFormat::default(),
                family: HeaderFamily::default(),
                kind: WindowKind::default(),
                epoch: (Instant::now(), Utc::now()),
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
        let wall =
            state.epoch.1 + chrono::Duration::from_std(now.duration_since(state.epoch.0)).unwrap_or_default();
        // How many calls count now (before this one), and how long until the reset.
        let (used, left, boundary) = match state.kind {
            WindowKind::FromFirstCall => {
                let start = match state.window_start {
                    Some(start) if now.duration_since(start) < window => start,
                    _ => {
                        state.window_start = Some(now);
                        state.used = 0;
                        now
                    }
                };
                (state.used, window.saturating_sub(now.duration_since(start)), None)
            }
            WindowKind::Clock => {
                let window_us = window.as_micros().max(1) as i64;
                let wall_us = wall.timestamp_micros();
                let index = wall_us.div_euclid(window_us);
                let start = Some(index);
                if state.window_start_index != start {
                    state.window_start_index = start;
                    state.used = 0;
                }
                let left_us = (index + 1) * window_us - wall_us;
                // The reset instant is the boundary itself, not `wall + left` (which carries the
                // nanoseconds `wall_us` dropped, and would round up a whole second late).
                let boundary = DateTime::from_timestamp_micros((index + 1) * window_us);
                (state.used, Duration::from_micros(left_us.max(0) as u64), boundary)
            }
            WindowKind::Sliding => {
                while state
                    .counted
                    .front()
                    .is_some_and(|at| now.duration_since(*at) >= window)
                {
                    state.counted.pop_front();
                }
                let used = u32::try_from(state.counted.len()).unwrap_or(u32::MAX);
                // This call, if allowed, is the oldest when nothing else counts.
                let oldest = state.counted.front().copied().unwrap_or(now);
                (used, window.saturating_sub(now.duration_since(oldest)), None)
            }
        };
        let over = used >= state.limit;
        let blocked = over && state.mode == RateLimitMode::Enforcing;
        if blocked {
            state.refused += 1;
        } else {
            state.used = used.saturating_add(1);
            if state.kind == WindowKind::Sliding {
                state.counted.push_back(now);
            }
        }
        let used = if blocked { used } else { used.saturating_add(1) };
        state.log.push(CallRecord {
            at: now,
            utc: wall,
            allowed: !blocked,
        });
        let reset_secs = left.as_millis().div_ceil(1000).max(1) as u64;
        let reset_at =
            boundary.unwrap_or_else(|| wall + chrono::Duration::from_std(left).unwrap_or_default());
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
            remaining: state.limit.saturating_sub(used),
            reset_secs,
            blocked,
            reset_text,
            window,
        }
    }

    /// How the window runs from the next call on (a fresh window starts).
    pub fn set_window_kind(&self, kind: WindowKind) {
        let mut state = self.lock();
        state.kind = kind;
        state.window_start = None;
        state.window_start_index = None;
        state.counted.clear();
        state.used = 0;
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
        state.window_start_index = None;
        state.counted.clear();
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
        state.window_start_index = None;
        state.counted.clear();
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
        write_headers(response.headers_mut(), layer.limiter.family(), &decision);
    }
    response
}

/// Writes what the vendor tells about its budget in `family`'s header names.
fn write_headers(headers: &mut axum::http::HeaderMap, family: HeaderFamily, decision: &Decision) {
    let window = decision.window.as_secs_f64();
    let policy = if window.fract() == 0.0 {
        format!("{};w={}", decision.limit, window as u64)
    } else {
        format!("{};w={window}", decision.limit)
    };
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    match family {
        HeaderFamily::XRateLimit | HeaderFamily::Ietf => {
            let names = match family {
                HeaderFamily::XRateLimit => {
                    ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"]
                }
                _ => ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
            };
            put(names[0], decision.limit.to_string());
            put(names[1], decision.remaining.to_string());
            put(names[2], decision.reset_text.clone());
            if family == HeaderFamily::Ietf {
                put("ratelimit-policy", policy);
            }
        }
        HeaderFamily::IetfStructured => {
            put(
                "ratelimit",
                format!(
                    "limit={}, remaining={}, reset={}",
                    decision.limit, decision.remaining, decision.reset_secs
                ),
            );
            put("ratelimit-policy", policy);
        }
    }
}

/// What a dialect name on the command line or in a test stands for.
impl std::str::FromStr for WindowKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "first-call" => Ok(WindowKind::FromFirstCall),
            "clock" => Ok(WindowKind::Clock),
            "sliding" => Ok(WindowKind::Sliding),
            _ => Err(format!(
                "unknown window kind `{text}` (first-call, clock or sliding)"
            )),
        }
    }
}

impl std::str::FromStr for ResetFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "seconds" => Ok(ResetFormat::Seconds),
            "epoch" => Ok(ResetFormat::EpochSeconds),
            "http-date" => Ok(ResetFormat::HttpDate),
            _ => Err(format!(
                "unknown reset format `{text}` (seconds, epoch or http-date)"
            )),
        }
    }
}

impl std::str::FromStr for HeaderFamily {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "x-ratelimit" => Ok(HeaderFamily::XRateLimit),
            "ietf" => Ok(HeaderFamily::Ietf),
            "ietf-structured" => Ok(HeaderFamily::IetfStructured),
            _ => Err(format!(
                "unknown header family `{text}` (x-ratelimit, ietf or ietf-structured)"
            )),
        }
    }
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

    #[tokio::test(start_paused = true)]
    async fn a_sliding_log_frees_one_slot_when_its_oldest_call_leaves() {
        let limiter = RateLimiter::new(2, Duration::from_secs(10), RateLimitMode::Enforcing);
        limiter.set_window_kind(WindowKind::Sliding);
        assert_eq!(limiter.check().remaining, 1);
        tokio::time::advance(Duration::from_secs(4)).await;
        let second = limiter.check();
        assert_eq!((second.remaining, second.reset_secs), (0, 6));
        assert!(limiter.check().blocked);
        tokio::time::advance(Duration::from_secs(6)).await;
        let third = limiter.check();
        assert!(!third.blocked);
        assert_eq!(
            (third.remaining, third.reset_secs),
            (0, 4),
            "the second call is now the oldest"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_window_resets_on_the_clock_whoever_calls() {
        let limiter = RateLimiter::new(5, Duration::from_secs(1), RateLimitMode::Enforcing);
        limiter.set_window_kind(WindowKind::Clock);
        let first = limiter.check();
        assert_eq!(first.reset_secs, 1);
        assert_eq!(first.remaining, 4);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.check().remaining, 4, "a new clock window");
    }
}
