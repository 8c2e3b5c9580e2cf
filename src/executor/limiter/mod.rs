//! The per-source rate limiter: one per configured source, shared by every job and scope of it.
//!
//! # Why a sliding log and not a GCRA
//!
//! A GCRA (or token bucket) with burst N lets a full burst through at the end of one window and
//! another at the start of the next: up to 2N calls inside one window of length T. The vendors
//! (and the sandbox) count calls in fixed windows we cannot see the edges of, so the only safe
//! promise is "never more than N calls in ANY window of length T". A log of the recent calls
//! keeps exactly that promise and still uses the whole budget: a call may go when fewer than N
//! calls fall in the last `T + margin`. Until the vendor's own answer shows that its window
//! refilled at a reset (below): then the fixed window is followed, and a sliding count may see
//! up to 2N calls where the vendor counts N per window.
//!
//! # Which instant a call is logged at
//!
//! The upstream counts a call when it *arrives*, somewhere between our send and the end of the
//! answer. A call in flight therefore counts as "now" for as long as it is in flight, and a
//! finished call is logged at the instant its answer ended. With that rule no window of length
//! T at the upstream can hold more than N arrivals, whatever the network jitter; the margin
//! ([`SAFETY_MARGIN`]) only covers clock skew between the two ends.
//!
//! # What the upstream says
//!
//! [`SourceLimiter::observe`] takes the budget from the answers' headers: once they tell a limit
//! and a window (named, or inferred from the reset instants, see [`Learned`]) those replace the
//! configured ones from the next call (a lone lower limit tightens) — unless the configured
//! window agrees with them within their rounding, when the configuration's precision stands.
//! `remaining = 0` with a reset blocks until the reset when the log itself still has room
//! (someone else spends the budget; when the log is full it already waits past the reset), and
//! [`SourceLimiter::block_for`] holds every caller back after a `Retry-After`. Every such wait has
//! a floor ([`MIN_WAIT`]) so a `Retry-After: 0` cannot turn into a busy loop.
//!
//! # Following what the vendor does
//!
//! A fixed window refills at its reset instant; a sliding one frees only what left it. Which
//! one the vendor runs is not taken on trust from its headers' past: once the vendor's stated
//! reset has passed while our log is still full, one call goes alone, and its answer says what
//! the new window holds. A full window (`remaining = limit - 1`) means the calls that ended
//! before the reset no longer count, and the whole limit goes at once (a sliding log would
//! spread the budget over two windows, and idle); anything less, and the log goes on.
//!
//! A window taken for whole seconds (see [`Learned::betting`]) is a bet: the same headers come
//! from a vendor whose window is a second longer and opened before our first call. So when the
//! vendor has said nothing remains and its stated reset is still ahead, the call the bet lets go
//! goes alone, as a probe: its answer confirms the bet (a new window, the rest follow), or
//! refuses it, which ends the bet for good — one refused call at most, where following the
//! bet blindly would spend a whole budget into refusals. A refusal's `Retry-After`, rounded up
//! to whole seconds, gives way to the reset when that names the same instant more precisely
//! ([`RateHeaders::retry_wait`]).
//!
//! # A learned policy is evidence, not law
//!
//! It is bounded: at least one call, and a window no longer than `rate_budget.max_wait_secs`
//! (the cap). A vendor naming a longer window (`RateLimit-Policy: 1;w=86400`) is treated like an
//! overlong `Retry-After`: the call that met it fails naming the header, the source is held back
//! for the cap only, and the answer teaches nothing else. The next call after the hold is the
//! probe: its answer says otherwise (and the budget was never changed), or confirms the long
//! window (and holds the source for another cap). A policy lapses when no answer has stated its
//! limit for [`learned::LEARNED_TTL`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::headers::{PolicyWindow, RateHeaders};
use crate::config::RateLimit;

mod learned;

pub use learned::WindowKind;
pub(crate) use learned::{LEARNED_TTL, Learned, MAX_LEARNED_WINDOW};

/// Extra time added to every window, as a share of it, to absorb clock skew and timer jitter.
pub(crate) const SAFETY_MARGIN: f64 = 0.015;
/// The most added to a wait for a reset the vendor wrote as an instant on its clock.
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_millis(250);
/// The shortest wait an upstream's header can impose (`Retry-After: 0`, a reset of 0).
pub(crate) const MIN_WAIT: Duration = Duration::from_millis(100);

/// Why no slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeadlineReached;

/// The rate limiter of one source. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub(crate) struct SourceLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// Locked briefly by every caller of this source (to take a slot), by every permit when its
    /// call ends, and by [`SourceLimiter::observe`]; never held across an await.
    state: Mutex<State>,
    /// Woken whenever a slot may have freed up earlier than a waiter computed: a call ended
    /// (an in-flight slot became a timed one) or the budget changed.
    changed: Notify,
}

struct State {
    /// From the configuration (or the vendor's default): what applies until the upstream says
    /// otherwise.
    configured: RateLimit,
    /// The share of the limit this limiter may spend (1 normally; `fallback_share` for the
    /// limiter a process falls back to without the shared budget). It applies to a limit the
    /// headers taught as much as to the configured one.
    share: f64,
    /// What the upstream's headers taught us about its limit (see [`Learned`]).
    learned: Learned,
    /// `rate_budget.max_wait_secs`: no learned window is longer.
    cap: Duration,
    /// Every call that still counts: in flight, or finished within the last window + margin.
    log: Vec<Slot>,
    /// No call may start before this (a reset with nothing remaining, or a `Retry-After`).
    blocked_until: Option<Instant>,
    /// A call that went on a bet (see [`Learned::betting`]) while the vendor still said nothing
    /// remains: no other call goes until its answer is in.
    probe: Option<Probe>,
    /// The probe went after the vendor's window reset at this instant: if its answer shows a
    /// full window, the calls that ended before the reset no longer count.
    refill_after: Option<Instant>,
    next_id: u64,
}

/// The one call that tests a bet on the vendor's window.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Sent, its slot's id.
    InFlight(u64),
    /// Its call ended at this instant; its answer is being read (`observe` ends the probe).
    Ended(Instant),
}

/// `share` of `calls`, rounded down, but at least one call per window.
fn scale(calls: u32, share: f64) -> u32 {
    ((f64::from(calls) * share).floor() as u32).max(1)
}

/// `now + wait`, saturating far in the future instead of panicking on overflow.
pub(crate) fn instant_after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(MAX_LEARNED_WINDOW * 365))
        .unwrap_or(now)
}

#[derive(Clone, Copy)]
struct Slot {
    id: u64,
    /// When the call started, or (once `done`) when its answer ended.
    at: Instant,
    done: bool,
}

/// What a caller should do now.
enum Decision {
    Go(u64),
    /// Wait until this instant, or until woken.
    WaitUntil(Instant),
    /// Every slot is held by a call in flight: wait until one ends.
    WaitForCall,
}

impl State {
    /// The budget in force: the upstream's limit and window once its headers told both (they
    /// win over the configuration, either way, unless the configuration agrees with them within
    /// their rounding); a lone announced limit only tightens. A learned window is held to the
    /// cap.
    fn budget(&self) -> (u32, Duration) {
        let configured = (self.configured.calls.max(1), self.configured.period());
        let Some(limit) = self.learned.limit else {
            return configured;
        };
        let limit = scale(limit, self.share);
        match self.learned.window() {
            Some(_) if limit == configured.0 && self.learned.agrees_with(configured.1) => configured,
            Some(window) => (limit, window.min(self.cap)),
            None => (limit.min(configured.0), configured.1),
        }
    }

    /// Forgets a learned policy no answer has confirmed for a while.
    fn expire(&mut self, now: Instant) {
        if self.learned.lapsed(now) {
            tracing::info!(
                "The upstream's rate-limit headers have not confirmed the learned limit for a while; back to the configured one until they do."
            );
            self.learned = Learned::default();
        }
    }

    fn span(&self) -> Duration {
        let (_, window) = self.budget();
        window.saturating_add(window.mul_f64(SAFETY_MARGIN))
    }

    /// Whether the log holds as many calls as the budget allows. Then "nothing remaining" from
    /// the upstream says nothing new: every call it counted in its current window frees a full
    /// window (plus margin) after it ended, so after that window opened, and so after its reset;
    /// while its reset, rounded up to whole seconds, would keep the budget idle for up to a
    /// second per window. With room in the log, someone else spends the budget, and the reset is
    /// the best there is to go by.
    fn is_full(&self, now: Instant) -> bool {
        let (calls, _) = self.budget();
        let span = self.span();
        let counted = self
            .log
            .iter()
            .filter(|slot| !slot.done || instant_after(slot.at, span) > now)
            .count();
        counted >= calls as usize
    }

    /// When the full log frees its first slot (a call in flight frees one span after now at the
    /// earliest); `None` while it has room.
    fn first_free(&self, now: Instant) -> Option<Instant> {
        if !self.is_full(now) {
            return None;
        }
        let span = self.span();
        self.log
            .iter()
            .map(|slot| instant_after(if slot.done { slot.at } else { now }, span))
            .filter(|at| *at > now)
            .min()
    }

    /// Logs a call starting now (a probe when `probe`); its slot's id.
    fn take_slot(&mut self, now: Instant, probe: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.log.push(Slot {
            id,
            at: now,
            done: false,
        });
        if probe {
            self.probe = Some(Probe::InFlight(id));
        }
        id
    }

    fn decide(&mut self, now: Instant) -> Decision {
        self.expire(now);
        if let Some(until) = self.blocked_until {
            if until > now {
                return Decision::WaitUntil(until);
            }
            self.blocked_until = None;
        }
        match self.probe {
            Some(Probe::InFlight(_)) => return Decision::WaitForCall,
            // An answer that never comes (a call that failed without headers) ends it too.
            Some(Probe::Ended(at)) if now < instant_after(at, MIN_WAIT) => {
                return Decision::WaitUntil(instant_after(at, MIN_WAIT));
            }
            Some(Probe::Ended(_)) => {
                self.probe = None;
                self.refill_after = None;
            }
            None => {}
        }
        let (calls, window) = self.budget();
        let span = self.span();
        self.log
            .retain(|slot| !slot.done || instant_after(slot.at, span) > now);

        let in_flight = self.log.iter().filter(|slot| !slot.done).count();
        // Spend what the vendor says remains before its reset, no more: calls in flight may all
        // count against it (answers to concurrent calls cross, so the log alone can run ahead
        // of a window that opened before our calls, until the headers have shown its length).
        if self.share >= 1.0
            && let Some((left, until)) = self.learned.vendor_left()
            && left > 0
            && now < until
            && in_flight >= left as usize
        {
            return Decision::WaitForCall;
        }
        // The vendor said nothing remains before a reset still ahead, and only a bet on its
        // window lets a call go now: one call goes, alone, and its answer settles the bet.
        let probing = self.share >= 1.0
            && self.learned.betting()
            && self
                .learned
                .vendor_left()
                .is_some_and(|(left, until)| left == 0 && now < until);
        if probing && in_flight > 0 {
            return Decision::WaitForCall;
        }
        if self.log.len() < calls as usize {
            return Decision::Go(self.take_slot(now, probing));
        }
        if in_flight >= calls as usize {
            return Decision::WaitForCall;
        }
        // The log is full, but the vendor's window has reset (its stated reset is behind us):
        // a fixed window refilled then, a sliding one freed what left it. One call goes alone to
        // see which, and its answer tells what the new window holds (see `observe`).
        let skew = window.mul_f64(SAFETY_MARGIN).min(MAX_CLOCK_SKEW);
        if self.share >= 1.0
            && in_flight == 0
            && let Some(reset) = self.learned.reset_passed(now, skew)
        {
            self.refill_after = Some(reset);
            return Decision::Go(self.take_slot(now, true));
        }
        // Fewer than `calls` may count when the call goes: the (calls - in_flight)-th most recent
        // finished call must have left the window.
        let mut finished: Vec<Instant> = self.log.iter().filter(|s| s.done).map(|s| s.at).collect();
        finished.sort_unstable_by(|a, b| b.cmp(a));
        let index = calls as usize - in_flight - 1;
        match finished.get(index) {
            Some(at) => {
                let frees = instant_after(*at, span);
                // Or until the vendor's stated reset has passed, if that comes first: the probe
                // above may go then.
                let reset = self
                    .learned
                    .stated_reset()
                    .map(|hi| instant_after(hi, skew))
                    .filter(|at| self.share >= 1.0 && *at > now);
                Decision::WaitUntil(reset.map_or(frees, |reset| reset.min(frees)))
            }
            None => Decision::WaitForCall,
        }
    }
}

/// A granted slot. Dropping it marks the call as ended (at that instant), which is when its
/// window starts to count down, so keep it until the whole answer has been read.
pub(crate) struct Permit {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        if let Some(slot) = state.log.iter_mut().find(|slot| slot.id == self.id) {
            slot.at = now;
            slot.done = true;
        }
        if state.probe == Some(Probe::InFlight(self.id)) {
            state.probe = Some(Probe::Ended(now));
        }
        drop(state);
        self.inner.changed.notify_waiters();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave the log inconsistent (every update is one
    // assignment), so a poisoned lock is still usable.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl SourceLimiter {
    /// A limiter for `limit`; `cap` is `rate_budget.max_wait_secs`, the longest window a header
    /// can impose.
    pub(crate) fn new(limit: RateLimit, cap: Duration) -> SourceLimiter {
        SourceLimiter::with_share(limit, 1.0, cap)
    }

    fn with_share(limit: RateLimit, share: f64, cap: Duration) -> SourceLimiter {
        SourceLimiter {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    configured: RateLimit {
                        calls: limit.calls.max(1),
                        per_ms: limit.per_ms.max(1),
                    },
                    share,
                    learned: Learned::default(),
                    cap: cap.max(MIN_WAIT),
                    log: Vec::new(),
                    blocked_until: None,
                    probe: None,
                    refill_after: None,
                    next_id: 0,
                }),
                changed: Notify::new(),
            }),
        }
    }

    /// A limiter allowing `share` of `limit` (at least one call per window): what a process keeps
    /// to when it cannot reach the budget it shares with other processes.
    pub(crate) fn scaled(limit: RateLimit, share: f64, cap: Duration) -> SourceLimiter {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let calls = scale(limit.calls, share);
        SourceLimiter::with_share(
            RateLimit {
                calls,
                per_ms: limit.per_ms,
            },
            share,
            cap,
        )
    }

    /// Counts calls that ended at `ends` (made under another budget) as if they had gone through
    /// this limiter, so switching budgets cannot put a second full budget into one window.
    pub(crate) fn record_finished(&self, ends: &[Instant]) {
        if ends.is_empty() {
            return;
        }
        let mut state = lock(&self.inner.state);
        for at in ends {
            let id = state.next_id;
            state.next_id += 1;
            state.log.push(Slot {
                id,
                at: *at,
                done: true,
            });
        }
    }

    /// Waits for a slot. Fails at once when the slot would come after `deadline`.
    pub(crate) async fn acquire(&self, deadline: Option<Instant>) -> Result<Permit, DeadlineReached> {
        loop {
            // Register for wake-ups before deciding, so a call ending in between is not missed.
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let decision = lock(&self.inner.state).decide(Instant::now());
            match decision {
                Decision::Go(id) => {
                    return Ok(Permit {
                        inner: self.inner.clone(),
                        id,
                    });
                }
                Decision::WaitUntil(at) => {
                    if deadline.is_some_and(|d| d < at) {
                        return Err(DeadlineReached);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = &mut notified => {}
                    }
                }
                Decision::WaitForCall => match deadline {
                    Some(deadline) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => return Err(DeadlineReached),
                            _ = &mut notified => {}
                        }
                    }
                    None => notified.await,
                },
            }
        }
    }

    /// Applies what an answer said about the budget. Takes effect from the next call. Every wait
    /// in `headers` must already be capped ([`RateHeaders::capped`]).
    ///
    /// Returns why the call must fail when the answer names a policy whose window is longer than
    /// the cap: the source is then held back for the cap (no longer), like after an overlong
    /// `Retry-After`, and the next call is the probe that learns whether the vendor meant it.
    pub(crate) fn observe(&self, headers: &RateHeaders) -> Option<String> {
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        state.expire(now);
        if matches!(state.probe, Some(Probe::Ended(_))) {
            // The probe's answer (no other call went while it was out) settles what it tested.
            state.probe = None;
            let limit = headers.limit.map(|l| l.get()).or(state.learned.limit);
            let full = matches!((limit, headers.remaining), (Some(l), Some(r)) if r.get() + 1 == l);
            if let Some(reset) = state.refill_after.take()
                && full
                && !headers.refused
            {
                // The whole window was there for it: what ended before the reset counted in
                // the window that is over.
                state.log.retain(|slot| !slot.done || slot.at >= reset);
            }
        }
        let configured = (state.configured.calls, state.configured.period());
        // A named window beyond the cap is not a budget to keep to but a hold (below): the
        // answer teaches nothing else, so the next answer finds the budget as it was.
        let beyond_cap = headers.window.is_some_and(|w| w.get() > state.cap);
        if !beyond_cap && state.learned.learn(headers, now) {
            let (calls, window) = state.budget();
            if (calls, window) != configured && state.learned.window().is_some() && state.share >= 1.0 {
                tracing::warn!(
                    calls,
                    window_ms = window.as_millis() as u64,
                    configured_calls = configured.0,
                    configured_window_ms = configured.1.as_millis() as u64,
                    kind = ?state.learned.kind,
                    "The upstream's rate-limit headers disagree with the configured limit; following the headers."
                );
            }
        }
        let mut held = None;
        if let Some(window) = headers.window
            && window.get() > state.cap
        {
            let cap = state.cap;
            extend_block(&mut state, instant_after(now, cap));
            let calls = headers
                .window_calls
                .or(headers.limit)
                .map_or(String::new(), |c| c.get().to_string());
            let secs = if window.get() >= PolicyWindow::MAX {
                format!("{} (or more)", PolicyWindow::MAX.as_secs())
            } else {
                window.get().as_secs().to_string()
            };
            held = Some(format!(
                "{}: {calls};w={secs} names a window longer than rate_budget.max_wait_secs ({} s); \
                 the source is held back for {} s only, then one call goes to see whether it still holds",
                headers.window_header.unwrap_or("RateLimit-Policy"),
                cap.as_secs(),
                cap.as_secs()
            ));
        }
        if beyond_cap {
            drop(state);
            self.inner.changed.notify_waiters();
            return held;
        }
        if headers.limit.is_some_and(|l| l.get() == 0) {
            // "0 calls allowed": nothing may go until the window resets.
            let wait = headers
                .reset
                .map_or(state.configured.period(), |r| r.get())
                .min(state.cap)
                .max(MIN_WAIT);
            extend_block(&mut state, instant_after(now, wait));
        }
        // A full log waits past the reset only if the learned window is not too short: when its
        // first slot frees before the vendor's earliest reset, it is.
        let log_too_short = match (state.first_free(now), state.learned.earliest_reset()) {
            (Some(frees), Some(reset)) => frees < reset,
            _ => false,
        };
        if headers.remaining.is_some_and(|r| r.get() == 0)
            && let Some(reset) = headers.reset
            && (!state.is_full(now) || log_too_short)
        {
            if state.share >= 1.0
                && state.learned.window().is_some()
                && state.learned.kind != learned::WindowKind::ClockAligned
            {
                // This process alone spends the budget (the shared budget judges "nothing
                // remaining" itself): the window is longer than learned.
                state.learned.opened_before_our_calls();
            }
            // An instant (epoch, date) is read on the vendor's clock, which disagrees with ours
            // a little: a call arriving a moment before the reset is refused.
            let (_, window) = state.budget();
            let skew = if reset.absolute {
                window.mul_f64(SAFETY_MARGIN).min(MAX_CLOCK_SKEW)
            } else {
                Duration::ZERO
            };
            let wait = reset.get().saturating_add(skew).min(state.cap).max(MIN_WAIT);
            extend_block(&mut state, instant_after(now, wait));
        }
        drop(state);
        self.inner.changed.notify_waiters();
        held
    }

    /// How long a refusal with these headers holds the source back ([`RateHeaders::retry_wait`]),
    /// with the clock skew this limiter allows an instant on the vendor's clock.
    pub(crate) fn retry_wait(&self, headers: &RateHeaders) -> Option<Duration> {
        headers.retry_wait(self.clock_skew())
    }

    /// Like [`SourceLimiter::retry_wait`], for an answer no limiter learns from
    /// ([`RateHeaders::refusal_wait`]: a token endpoint's).
    pub(crate) fn refusal_wait(&self, headers: &RateHeaders) -> Option<Duration> {
        headers.refusal_wait(self.clock_skew())
    }

    /// The skew this limiter allows an instant read on the vendor's clock: a share of its
    /// window, at most [`MAX_CLOCK_SKEW`].
    fn clock_skew(&self) -> Duration {
        let (_, window) = lock(&self.inner.state).budget();
        window.mul_f64(SAFETY_MARGIN).min(MAX_CLOCK_SKEW)
    }

    /// Holds every caller of this source back for `wait` (at least [`MIN_WAIT`]): after a 429
    /// with `Retry-After`, nobody should knock before then. The caller caps `wait`.
    pub(crate) fn block_for(&self, wait: Duration) {
        let until = instant_after(Instant::now(), wait.max(MIN_WAIT));
        extend_block(&mut lock(&self.inner.state), until);
        self.inner.changed.notify_waiters();
    }

    /// What the upstream's headers taught this limiter so far.
    pub(crate) fn learned(&self) -> Learned {
        lock(&self.inner.state).learned
    }

    /// Calls allowed per window right now (configuration tightened by the upstream's headers).
    pub(crate) fn budget(&self) -> (u32, Duration) {
        lock(&self.inner.state).budget()
    }
}

fn extend_block(state: &mut State, until: Instant) {
    if state.blocked_until.is_none_or(|b| b < until) {
        state.blocked_until = Some(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::headers::{Calls, Reset};

    const CAP: Duration = Duration::from_secs(900);

    fn limit(calls: u32, per: Duration) -> RateLimit {
        RateLimit::new(calls, per)
    }

    /// The most instants in any half-open window `[t, t + window)`, as the sandbox counts.
    fn max_in_any_window(times: &[Instant], window: Duration) -> usize {
        let mut times = times.to_vec();
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

    pub(super) fn answer(limit: u32, remaining: u32, reset_secs: u64) -> RateHeaders {
        RateHeaders {
            limit: Some(Calls::new(limit.into())),
            remaining: Some(Calls::new(remaining.into())),
            reset: Some(Reset::secs(reset_secs)),
            ..RateHeaders::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sequential_calls_never_exceed_the_limit_in_any_window_and_use_the_full_budget() {
        let window = Duration::from_secs(1);
        let limiter = SourceLimiter::new(limit(5, window), CAP);
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..100 {
            let permit = limiter.acquire(None).await.expect("no deadline");
            sent.push(Instant::now());
            drop(permit);
        }
        let elapsed = start.elapsed();
        assert!(max_in_any_window(&sent, window) <= 5);
        // 20 bursts of 5: the last starts after 19 windows (plus margins); the ideal is 20.
        let ideal = window * 20;
        assert!(elapsed <= ideal, "{elapsed:?} is slower than the ideal {ideal:?}");
        assert!(elapsed >= window.mul_f64(19.0), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_with_slow_answers_share_one_budget() {
        let window = Duration::from_secs(1);
        let limiter = SourceLimiter::new(limit(10, window), CAP);
        let log = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let limiter = limiter.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    for call in 0..25u64 {
                        let permit = limiter.acquire(None).await.expect("no deadline");
                        // The upstream sees the call at some point while it is in flight.
                        let latency = Duration::from_millis(5 + (task * 7 + call * 13) % 40);
                        tokio::time::sleep(latency / 2).await;
                        log.lock().expect("test lock").push(Instant::now());
                        tokio::time::sleep(latency / 2).await;
                        drop(permit);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let arrivals = log.lock().expect("test lock").clone();
        assert_eq!(arrivals.len(), 200);
        assert!(max_in_any_window(&arrivals, window) <= 10);
        let ideal = window * 20;
        let elapsed = start.elapsed();
        assert!(
            elapsed <= ideal.mul_f64(1.1),
            "{elapsed:?} against an ideal of {ideal:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_scaled_limiter_allows_its_share_and_counts_calls_made_elsewhere() {
        let window = Duration::from_secs(1);
        let half = SourceLimiter::scaled(limit(10, window), 0.5, CAP);
        assert_eq!(half.budget(), (5, window));
        assert_eq!(
            SourceLimiter::scaled(limit(1, window), 0.5, CAP).budget(),
            (1, window)
        );
        // Three calls that just ended under another budget leave two of the five.
        half.record_finished(&[Instant::now(); 3]);
        let start = Instant::now();
        for _ in 0..2 {
            drop(half.acquire(None).await.expect("no deadline"));
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(half.acquire(None).await.expect("no deadline"));
        assert!(start.elapsed() >= window, "the sixth call in a window waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_announced_limit_applies_from_the_next_call() {
        let window = Duration::from_secs(1);
        let limiter = SourceLimiter::new(limit(20, window), CAP);
        for _ in 0..3 {
            drop(limiter.acquire(None).await.expect("no deadline"));
        }
        limiter.observe(&RateHeaders {
            limit: Some(Calls::new(4)),
            ..RateHeaders::default()
        });
        assert_eq!(limiter.budget(), (4, window));
        let start = Instant::now();
        drop(limiter.acquire(None).await.expect("no deadline"));
        assert_eq!(start.elapsed(), Duration::ZERO, "the fourth slot is free");
        drop(limiter.acquire(None).await.expect("no deadline"));
        assert!(start.elapsed() >= window, "the fifth waits a window");
        // An announced limit above the configured one does not loosen anything.
        limiter.observe(&RateHeaders {
            limit: Some(Calls::new(1000)),
            ..RateHeaders::default()
        });
        assert_eq!(limiter.budget(), (20, window));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_remaining_waits_for_the_reset_and_retry_after_zero_has_a_floor() {
        let limiter = SourceLimiter::new(limit(100, Duration::from_secs(60)), CAP);
        limiter.observe(&RateHeaders {
            remaining: Some(Calls::new(0)),
            reset: Some(Reset::secs(7)),
            ..RateHeaders::default()
        });
        let start = Instant::now();
        drop(limiter.acquire(None).await.expect("no deadline"));
        assert_eq!(start.elapsed(), Duration::from_secs(7));

        limiter.block_for(Duration::ZERO);
        let start = Instant::now();
        drop(limiter.acquire(None).await.expect("no deadline"));
        assert_eq!(start.elapsed(), MIN_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_remaining_after_our_own_full_budget_waits_for_the_log_not_the_rounded_reset() {
        let window = Duration::from_millis(1000);
        let limiter = SourceLimiter::new(limit(3, window), CAP);
        for _ in 0..3 {
            drop(limiter.acquire(None).await.expect("no deadline"));
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // The third answer: nothing left, reset "1 s" (0.8 s rounded up to whole seconds).
        limiter.observe(&RateHeaders {
            remaining: Some(Calls::new(0)),
            reset: Some(Reset::secs(1)),
            ..RateHeaders::default()
        });
        let start = Instant::now();
        drop(limiter.acquire(None).await.expect("no deadline"));
        // The first call frees one window and margin after it ended, 0.3 s ago.
        assert_eq!(
            start.elapsed(),
            window + window.mul_f64(SAFETY_MARGIN) - Duration::from_millis(300)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_beyond_the_deadline_is_refused_at_once() {
        let limiter = SourceLimiter::new(limit(1, Duration::from_secs(10)), CAP);
        drop(limiter.acquire(None).await.expect("no deadline"));
        let start = Instant::now();
        let refused = limiter.acquire(Some(start + Duration::from_secs(1))).await;
        assert!(refused.is_err());
        assert_eq!(start.elapsed(), Duration::ZERO, "no pointless wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_flight_holds_its_slot_until_it_ends() {
        let window = Duration::from_secs(1);
        let limiter = SourceLimiter::new(limit(1, window), CAP);
        let held = limiter.acquire(None).await.expect("no deadline");
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                drop(limiter.acquire(None).await.expect("no deadline"));
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(held);
        let waited = waiter.await.expect("task");
        assert!(waited >= Duration::from_secs(3) + window, "{waited:?}");
    }

    /// A vendor allowing 10 calls per 2 s window, writing its reset as an epoch rounded up to
    /// whole seconds and `Retry-After` as whole seconds: windows on the clock (`clock`), or
    /// opening with the first call after the last reset.
    struct EpochVendor {
        clock: bool,
        /// Where a window on the clock starts; our first call comes 0.3 s after it.
        base: Instant,
        opened: Option<Instant>,
        counted: u32,
        refused: u32,
    }

    impl EpochVendor {
        const LIMIT: u32 = 10;
        const WINDOW: Duration = Duration::from_secs(2);

        fn new(clock: bool) -> EpochVendor {
            EpochVendor {
                clock,
                base: Instant::now() - Duration::from_millis(300),
                opened: None,
                counted: 0,
                refused: 0,
            }
        }

        /// Counts a call arriving now; the headers of its answer.
        fn call(&mut self, sent: Instant) -> RateHeaders {
            let now = Instant::now();
            let start = if self.clock {
                let n = now.duration_since(self.base).as_nanos() / Self::WINDOW.as_nanos();
                self.base + Self::WINDOW * n as u32
            } else {
                match self.opened {
                    Some(opened) if now < opened + Self::WINDOW => opened,
                    _ => now,
                }
            };
            if self.opened != Some(start) {
                self.opened = Some(start);
                self.counted = 0;
            }
            // The epoch second at or after the reset, counted on `base`'s whole seconds.
            let reset_at = start + Self::WINDOW;
            let since_base = reset_at.duration_since(self.base).as_secs_f64();
            let written = self.base + Duration::from_secs_f64(since_base.ceil());
            let wait = written.duration_since(now);
            let refused = self.counted >= Self::LIMIT;
            self.counted += 1;
            self.refused += u32::from(refused);
            RateHeaders {
                limit: Some(Calls::new(Self::LIMIT.into())),
                remaining: Some(Calls::new(Self::LIMIT.saturating_sub(self.counted).into())),
                reset: Some(Reset {
                    wait: crate::executor::headers::Wait::new(wait),
                    absolute: true,
                    resolution: Duration::from_secs(1),
                }),
                retry_after: refused.then(|| {
                    crate::executor::headers::Wait::new(Duration::from_secs(wait.as_secs_f64().ceil() as u64))
                }),
                sent_at: Some(sent),
                read_at: Some(now),
                ..RateHeaders::default()
            }
            .refused(refused)
        }
    }

    /// Four callers spend `calls` calls through one limiter configured for 100 per minute (so the
    /// vendor's budget must come from its headers); how long that took and how many it refused.
    async fn spend_against(vendor: EpochVendor, calls: usize) -> (Duration, u32) {
        let limiter = SourceLimiter::new(limit(100, Duration::from_secs(60)), CAP);
        let vendor = Arc::new(Mutex::new(vendor));
        let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (limiter, vendor, issued) = (limiter.clone(), vendor.clone(), issued.clone());
                tokio::spawn(async move {
                    while issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < calls {
                        let permit = limiter.acquire(None).await.expect("no deadline");
                        let sent = Instant::now();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        let headers = vendor.lock().expect("test lock").call(sent);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        drop(permit);
                        let _ = limiter.observe(&headers);
                        if headers.refused {
                            let wait = limiter.retry_wait(&headers).expect("a Retry-After");
                            limiter.block_for(wait);
                            // The refused call is made again.
                            issued.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let refused = vendor.lock().expect("test lock").refused;
        (start.elapsed(), refused)
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_taken_for_whole_seconds_is_spent_in_full_when_the_vendor_counts_them() {
        // Windows from the first call, our first call 0.3 s past a whole second: every reset
        // reads up to a second long, and only the bet on whole seconds keeps 2 s per window.
        let (elapsed, refused) = spend_against(EpochVendor::new(false), 100).await;
        assert_eq!(refused, 0, "no call over the vendor's limit");
        // Ten windows' worth: the tenth starts after nine windows (and their margins).
        assert!(elapsed <= Duration::from_millis(19_000), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bet_refused_by_a_window_on_the_clock_costs_one_call_and_then_every_reset_refills() {
        // The same headers from a vendor whose 2 s windows run on the clock, our first call 0.3 s
        // into one: they read exactly like 1 s windows from the first call, so the bet on whole
        // seconds goes, as one probe, and is refused once.
        let (elapsed, refused) = spend_against(EpochVendor::new(true), 100).await;
        assert_eq!(refused, 1, "one probe refused, then no more");
        // Spent in full at each reset from then on: ten windows, the first of them 1.7 s long.
        assert!(elapsed <= Duration::from_millis(18_100), "{elapsed:?}");
    }
}
