//! What an upstream's rate-limit headers teach about its budget ([`Learned`]): the limit, and the
//! window named by the vendor or inferred from the instants its windows reset at.
//!
//! # Inferring the window from reset instants
//!
//! A reset value is rounded: whole seconds, rounded up. Taken as "seconds from now" its error is
//! up to a second on every answer, and a window inferred from the shortest such value is
//! lengthened by up to that second (6.8 s for a vendor's 6 s). So every answer is turned into an
//! *interval* of instants the reset lies in (`[lo, hi]` on this process's clock): for a delay,
//! `[sent + value - resolution, read + value]` (the vendor counted somewhere between our send and
//! our read); for an instant (an epoch, an HTTP date), `[value - resolution, value]`. Answers of
//! one window name one reset instant, so intersecting their intervals pins it down, and the bounds
//! below never include the rounding twice:
//!
//! - **lower**: no reset lies further than one window ahead, so every reset value less its
//!   resolution is a (strict) lower bound of the window.
//! - **upper, from a window's first call** (`remaining = limit - 1`): a window that opens with our
//!   call (or a sliding log) resets one window after the vendor counted it, so `hi - sent` bounds
//!   the window from above. A window aligned to the clock opens before our call: its first answer
//!   names a reset *closer* than the lower bound, which is how such a vendor is recognised
//!   ([`WindowKind::ClockAligned`]); its first-call bounds are then ignored.
//! - **upper, from successive windows**: when a later answer shows a full refill at a later
//!   instant, the two resets are at least one window apart (for fixed windows of either kind, and
//!   for a sliding log, which refills fully only after a whole window without calls).
//!
//! A partial refill (more remaining at a later reset, but not the full limit) is a sliding log
//! ([`WindowKind::Sliding`]).
//!
//! Rounded-up whole seconds still leave up to a second between the bounds when every window
//! opens at the same fraction of a second (an epoch reset, a client whose cycle is whole
//! seconds): the 6.8 s of issue 26. A vendor that writes its resets in whole seconds counts its
//! windows in whole seconds, so the window is the first whole second above the lower bound when
//! the upper bound allows it. A fraction in any reset turns this off. It is a bet: a window on
//! the clock that opened before our first call shows the very same resets with a window a second
//! longer, so the limiter tests it with one call, and a refusal ends it
//! ([`Learned::betting`]).
//!
//! # Evidence, not law
//!
//! A learned policy lapses [`LEARNED_TTL`] after the last answer that stated its limit, and an
//! answer stating another limit starts the learning over. Where it is used, a window is held to
//! `rate_budget.max_wait_secs` (see `SourceLimiter::observe`).

use std::time::Duration;

use tokio::time::Instant;

use crate::executor::headers::RateHeaders;

/// How long a learned policy stands without an answer stating its limit again.
pub(crate) const LEARNED_TTL: Duration = Duration::from_secs(15 * 60);

/// The longest window a reset can teach: beyond it a reset is not a window but a block (a daily
/// quota, a vendor's mistake), which the wait cap deals with.
pub(crate) const MAX_LEARNED_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How the vendor's windows behave, as far as its answers show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WindowKind {
    /// Not seen enough yet.
    #[default]
    Unknown,
    /// A fixed window that opens with the first call after the last reset.
    FromFirstCall,
    /// A fixed window on the clock: it opens whether or not anyone calls.
    ClockAligned,
    /// A sliding log: each call counts for one window after it.
    Sliding,
}

/// The upstream's limit as its headers state it, and what they tell about its window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// Calls per window (at least 1; an announced 0 is a block, not a limit).
    pub limit: Option<u32>,
    /// From `;w=`: the vendor said so, nothing to infer.
    pub named_window: Option<Duration>,
    /// The header that named it, for messages.
    pub named_by: Option<&'static str>,
    /// The window is at least this long (from every answer's reset).
    pub lower: Option<Duration>,
    /// The window is at most this long: the tightest first-call bound seen.
    pub first_call_upper: Option<Duration>,
    /// The window is at most this long: the closest pair of successive full windows.
    pub successive_upper: Option<Duration>,
    pub kind: WindowKind,
    /// The longest reset seen: what a window on the clock is known to be at least, until two
    /// successive windows bound it.
    pub longest: Option<Duration>,
    /// Some reset came finer than whole seconds: the window is not taken for whole seconds.
    pub fine: bool,
    /// A bet on whole seconds was refused even with the window taken for one on the clock: no
    /// more bets (see [`Learned::betting`]).
    pub no_bets: bool,
    /// The reset of the window in force, as its answers narrowed it down.
    current: Option<Seen>,
    /// The window before it, when the current one opened with a full refill.
    previous: Option<Seen>,
    /// The last answer that stated the limit: the policy lapses [`LEARNED_TTL`] after it.
    confirmed_at: Option<Instant>,
}

/// One window of the vendor as its answers tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// The reset lies in `[lo, hi]`.
    lo: Instant,
    hi: Instant,
    /// When the call that opened it (`remaining = limit - 1`) was sent, if we saw that call.
    opened: Option<Instant>,
    /// The least remaining any of its answers stated.
    remaining: Option<u32>,
}

impl Learned {
    /// The window as far as the headers tell it: the named one, else the tightest upper bound
    /// (never below the lower bound), taken for whole seconds where the rounding allows it.
    pub fn window(&self) -> Option<Duration> {
        self.estimate().map(|(window, _)| window)
    }

    /// Whether the window in force is a bet: shorter than the headers' upper bound, because a
    /// vendor rounding to whole seconds is taken to count whole seconds. A vendor whose window
    /// opened before our first call (on the clock) shows the very same headers with a window a
    /// second longer, so a call that goes on the bet before the vendor's stated reset goes alone,
    /// as a probe (see `SourceLimiter`), and a refusal of it ends the bet.
    pub(crate) fn betting(&self) -> bool {
        self.estimate().is_some_and(|(_, snapped)| snapped)
    }

    /// The window and whether it was taken down to whole seconds.
    fn estimate(&self) -> Option<(Duration, bool)> {
        if let Some(named) = self.named_window {
            return Some((named, false));
        }
        let Some(upper) = [
            self.first_call_upper,
            self.current_first_call_upper(),
            self.successive_upper(),
        ]
        .into_iter()
        .flatten()
        .min() else {
            // A window on the clock whose first-call resets proved too short: its longest reset
            // stands in (the vendor's "nothing remaining" blocks until its reset meanwhile).
            return self
                .longest
                .filter(|_| self.kind == WindowKind::ClockAligned)
                .map(|w| (w.min(MAX_LEARNED_WINDOW), false));
        };
        let lower = self.lower.unwrap_or(Duration::ZERO);
        let mut window = upper.max(lower);
        let mut snapped = false;
        if !self.fine && !self.no_bets {
            // A vendor that rounds its resets to whole seconds counts whole seconds: the window
            // is the whole seconds of the upper bound, if that is still above the lower bound.
            // Otherwise the rounding would lengthen every window by what is left of a second.
            let whole = Duration::from_secs(upper.as_secs());
            if whole > lower && whole < window {
                window = whole;
                snapped = true;
            }
        }
        (!window.is_zero()).then(|| (window.min(MAX_LEARNED_WINDOW), snapped))
    }

    /// Whether a configured window agrees with the headers within their rounding: then its
    /// precision stands, since the headers cannot tell the window more finely than they round.
    pub fn agrees_with(&self, configured: Duration) -> bool {
        if let Some(named) = self.named_window {
            // A named window is whole seconds: a configured one in that second is the same.
            return configured >= named && configured <= named + Duration::from_secs(1);
        }
        if configured <= self.lower.unwrap_or(Duration::ZERO) {
            return false; // the vendor's window is longer
        }
        // A first call's reset says little against a configuration: on a clock window it reads
        // short by however far into the window the call came. Successive windows bound it.
        let Some(successive) = self.successive_upper() else {
            return true;
        };
        let slack = if self.fine {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        };
        configured <= successive + slack
    }

    /// What the vendor last said remains of its current window, and until when that holds (the
    /// latest instant its reset may lie at).
    pub(crate) fn vendor_left(&self) -> Option<(u32, Instant)> {
        let seen = self.current?;
        Some((seen.remaining?, seen.hi))
    }

    /// The latest instant the vendor's current window reset at, once that (plus `skew`) has
    /// passed and no answer has shown the window after it yet.
    pub(crate) fn reset_passed(&self, now: Instant, skew: Duration) -> Option<Instant> {
        let hi = self.stated_reset()?;
        (hi.checked_add(skew).is_some_and(|at| at <= now)).then_some(hi)
    }

    /// The latest instant the vendor's current window resets at, as its answers narrowed it down.
    pub(crate) fn stated_reset(&self) -> Option<Instant> {
        self.current.map(|seen| seen.hi)
    }

    /// The earliest instant the vendor's current window may reset at.
    pub(crate) fn earliest_reset(&self) -> Option<Instant> {
        self.current.map(|seen| seen.lo)
    }

    /// The vendor ran out of calls while our log of its window still had room and nobody else
    /// spends it: its window is longer than a first call's reset showed, so it opened before
    /// that call (a window on the clock). Only successive windows bound it from now on.
    pub(super) fn opened_before_our_calls(&mut self) {
        self.kind = WindowKind::ClockAligned;
        self.first_call_upper = None;
    }

    /// Whether the policy has lapsed: no answer stated its limit for [`LEARNED_TTL`].
    pub(crate) fn lapsed(&self, now: Instant) -> bool {
        self.confirmed_at
            .is_some_and(|at| now.saturating_duration_since(at) > LEARNED_TTL)
    }

    /// The current window's first-call bound, when it is consistent with the lower bound.
    fn current_first_call_upper(&self) -> Option<Duration> {
        if self.kind == WindowKind::ClockAligned {
            return None;
        }
        let seen = self.current?;
        let bound = seen.hi.saturating_duration_since(seen.opened?);
        (bound >= self.lower.unwrap_or(Duration::ZERO)).then_some(bound)
    }

    /// The tightest bound successive windows gave.
    fn successive_upper(&self) -> Option<Duration> {
        [self.successive_upper, self.current_successive_upper()]
            .into_iter()
            .flatten()
            .min()
    }

    /// How far apart the current window's reset and the one before lie at most, both narrowed
    /// down by all their answers so far.
    fn current_successive_upper(&self) -> Option<Duration> {
        let (previous, current) = (self.previous?, self.current?);
        // Only a full refill (an answer with `remaining = limit - 1`) shows a whole new window.
        current.opened?;
        // The earlier reset lies strictly after its `lo` (values are rounded up), so the two are
        // strictly less than this far apart.
        Some(
            current
                .hi
                .saturating_duration_since(previous.lo)
                .saturating_sub(Duration::from_micros(1)),
        )
    }

    /// Takes in one answer's headers (read at `now` unless they say when); true when the budget
    /// they imply changed.
    pub(super) fn learn(&mut self, headers: &RateHeaders, now: Instant) -> bool {
        let before = (self.limit, self.window());
        let read = headers.read_at.unwrap_or(now);
        if headers.refused
            && self.betting()
            && let Some(seen) = self.current
            && headers.sent_at.unwrap_or(read) < seen.hi
        {
            // The vendor refused a call the bet let go before its stated reset: its window is
            // longer than our first call showed, so it opened before that call (on the clock).
            tracing::info!(
                "The upstream refused a call made before its stated reset: its windows run on the clock; \
                 waiting for its resets from now on."
            );
            // Already known to be on the clock, the bet itself was wrong: no more of them.
            self.no_bets = self.kind == WindowKind::ClockAligned;
            self.opened_before_our_calls();
        }
        if let Some(limit) = headers.limit.map(|l| l.get()).filter(|l| *l >= 1) {
            if self.limit != Some(limit) {
                // Another limit is another policy: what was inferred for the old one is void.
                *self = Learned {
                    limit: Some(limit),
                    ..Learned::default()
                };
            }
            self.named_window = headers.window.map(|w| w.get());
            self.named_by = headers.window_header;
            self.confirmed_at = Some(read);
        }
        if let Some(reset) = headers.reset
            && !headers.reset_capped
            && !reset.get().is_zero()
            && reset.get() <= MAX_LEARNED_WINDOW
        {
            let sent = headers.sent_at.unwrap_or(read).min(read);
            self.fine |= reset.resolution < Duration::from_secs(1);
            let hi = read + reset.get();
            let lo = if reset.absolute { hi } else { sent + reset.get() }
                .checked_sub(reset.resolution)
                .unwrap_or(sent)
                .min(hi);
            // The reset lies strictly less than one resolution before the value, and never more
            // than a window after the vendor counted the call (which was before `read`): the
            // window is strictly longer than this.
            self.longest = Some(self.longest.map_or(reset.get(), |l| l.max(reset.get())));
            let lower = reset.get().saturating_sub(reset.resolution);
            self.lower = Some(self.lower.map_or(lower, |l| l.max(lower)));
            self.see_reset(lo, hi, sent, headers.remaining.map(|r| r.get()));
        }
        before != (self.limit, self.window())
    }

    fn see_reset(&mut self, lo: Instant, hi: Instant, sent: Instant, remaining: Option<u32>) {
        let opening = matches!((self.limit, remaining), (Some(l), Some(r)) if r + 1 == l);
        let fresh = Seen {
            lo,
            hi,
            opened: opening.then_some(sent),
            remaining,
        };
        let Some(mut seen) = self.current else {
            self.current = Some(fresh);
            return;
        };
        // Answers to concurrent calls arrive in any order, so neither `remaining` nor the order
        // of arrival tells which window an answer belongs to; its reset instant does.
        let overlap = hi.min(seen.hi).saturating_duration_since(lo.max(seen.lo));
        if !overlap.is_zero() || (lo == hi && lo >= seen.lo && lo <= seen.hi) {
            // The same reset: narrow it down.
            seen.lo = seen.lo.max(lo);
            seen.hi = seen.hi.min(hi);
            seen.remaining = seen.remaining.min(remaining).or(remaining);
            if opening {
                seen.opened = Some(seen.opened.map_or(sent, |o| o.min(sent)));
            }
            self.current = Some(seen);
        } else if lo >= seen.hi {
            // A later reset: a new window (or a sliding log's next reset).
            if let Some(apart) = self.current_successive_upper() {
                self.successive_upper = Some(self.successive_upper.map_or(apart, |u| u.min(apart)));
            }
            if !opening && remaining > seen.remaining && self.kind == WindowKind::Unknown {
                // More left at a later reset, but not the full limit: a sliding log's oldest
                // call left (or concurrent answers crossed; the bounds hold either way).
                self.kind = WindowKind::Sliding;
            }
            self.close(seen);
            self.previous = Some(seen);
            self.current = Some(fresh);
        }
        // Otherwise an answer that overtook a later one: nothing new.
    }

    /// A window is over: what its first call says about the window's length.
    fn close(&mut self, seen: Seen) {
        let Some(opened) = seen.opened else {
            return;
        };
        let bound = seen.hi.saturating_duration_since(opened);
        if bound < self.lower.unwrap_or(Duration::ZERO) {
            // It reset sooner after our first call than a window: it opened before that call.
            self.kind = WindowKind::ClockAligned;
            self.first_call_upper = None;
        } else if self.kind != WindowKind::ClockAligned {
            // Only once: a window's first call is one bound, however many answers follow.
            self.first_call_upper = Some(self.first_call_upper.map_or(bound, |u| u.min(bound)));
            if self.kind == WindowKind::Unknown {
                self.kind = WindowKind::FromFirstCall;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::headers::{Calls, PolicyWindow, Reset};
    use crate::executor::limiter::tests::answer;

    /// An answer read at `read` (sent 5 ms before) with a reset `reset` from `read`.
    fn timed(limit: u32, remaining: u32, reset: Reset, read: Instant) -> RateHeaders {
        RateHeaders {
            limit: Some(Calls::new(limit.into())),
            remaining: Some(Calls::new(remaining.into())),
            reset: Some(reset),
            sent_at: Some(read - Duration::from_millis(5)),
            read_at: Some(read),
            ..RateHeaders::default()
        }
    }

    /// What a vendor with windows of `window` opening at `start` writes at `at`, as an epoch
    /// rounded up: the reset instant on the whole second, as a wait from `at`.
    fn epoch_reset(start: f64, window: f64, at: f64) -> Reset {
        let reset = (start + window).ceil();
        Reset {
            wait: crate::executor::headers::Wait::new(Duration::from_secs_f64(reset - at)),
            absolute: true,
            resolution: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_window_starting_with_its_first_call_is_learned_from_the_first_answer() {
        let origin = Instant::now();
        let at = |secs: u64| origin + Duration::from_secs(secs);
        let mut learned = Learned::default();
        learned.learn(&timed(10, 9, Reset::secs(6), at(0)), at(0));
        let first = learned.window().expect("a window");
        assert!(
            first >= Duration::from_secs(6) && first <= Duration::from_millis(6005),
            "{first:?}"
        );
        learned.learn(&timed(10, 8, Reset::secs(5), at(1)), at(1));
        learned.learn(&timed(10, 7, Reset::secs(4), at(2)), at(2));
        assert_eq!(learned.window(), Some(first));
    }

    #[test]
    fn epoch_resets_rounded_up_never_lengthen_the_window_beyond_what_the_windows_show() {
        // 10 calls per 6 s from the first call; resets as epoch seconds rounded up. The first
        // window opens at x.2 s: its reset reads 6.8 s after the call.
        let origin = Instant::now();
        let at = |secs: f64| origin + Duration::from_secs_f64(secs);
        let mut learned = Learned::default();
        let mut start = 1000.2;
        for _ in 0..8 {
            for call in 0..10u32 {
                let t = start + f64::from(call) * 0.01;
                learned.learn(
                    &timed(10, 9 - call, epoch_reset(start, 6.0, t), at(t - 1000.0)),
                    at(t - 1000.0),
                );
            }
            let window = learned.window().expect("a window").as_secs_f64();
            assert!(window >= 6.0 - 0.02, "never shorter than the vendor's: {window}");
            // The next window opens when the estimate lets the next call go.
            start += window * 1.015 + 0.01;
        }
        let window = learned.window().expect("a window").as_secs_f64();
        assert!(
            window <= 6.35,
            "the rounding no longer lengthens it much: {window}"
        );
        assert!(learned.agrees_with(Duration::from_secs(6)), "{learned:?}");
        assert!(!learned.agrees_with(Duration::from_secs(60)));
        assert_eq!(learned.kind, WindowKind::FromFirstCall);
    }

    #[test]
    fn a_clock_aligned_window_first_seen_near_its_end_is_not_taken_for_a_short_one() {
        // 60-second windows on the clock; our first call lands 5 s before a boundary.
        let origin = Instant::now();
        let at = |secs: u64| origin + Duration::from_secs(secs);
        let mut learned = Learned::default();
        learned.learn(&timed(10, 9, Reset::secs(5), at(0)), at(0));
        learned.learn(&timed(10, 8, Reset::secs(4), at(1)), at(1));
        // The next window's first call, 2 s after it opened.
        learned.learn(&timed(10, 9, Reset::secs(58), at(7)), at(7));
        learned.learn(&timed(10, 8, Reset::secs(57), at(8)), at(8));
        let window = learned.window().expect("a window");
        assert!(window >= Duration::from_secs(59), "{window:?}");
        // The window after that, again 2 s in: two windows apart by 60 s.
        learned.learn(&timed(10, 9, Reset::secs(58), at(67)), at(67));
        assert_eq!(learned.kind, WindowKind::ClockAligned);
        let window = learned.window().expect("a window");
        assert!(
            window >= Duration::from_secs(59) && window <= Duration::from_millis(61_100),
            "{window:?}"
        );
    }

    #[test]
    fn a_partial_refill_is_a_sliding_log() {
        let origin = Instant::now();
        let at = |secs: u64| origin + Duration::from_secs(secs);
        let mut learned = Learned::default();
        learned.learn(&timed(3, 2, Reset::secs(10), at(0)), at(0));
        learned.learn(&timed(3, 1, Reset::secs(9), at(1)), at(1));
        learned.learn(&timed(3, 0, Reset::secs(8), at(2)), at(2));
        // At 11.5 s the calls at 0 and 1 s have left: two slots back, one spent by this call,
        // and the next reset is the call at 2 s leaving.
        let later = origin + Duration::from_millis(11_500);
        learned.learn(&timed(3, 1, Reset::secs(1), later), later);
        assert_eq!(learned.kind, WindowKind::Sliding);
        let window = learned.window().expect("a window");
        assert!(
            window >= Duration::from_secs(10) && window <= Duration::from_millis(10_010),
            "{window:?}"
        );
    }

    #[test]
    fn a_named_window_wins_over_inference_and_another_limit_starts_over() {
        let now = Instant::now();
        let mut learned = Learned::default();
        learned.learn(
            &RateHeaders {
                window: PolicyWindow::new(Duration::from_secs(30)),
                ..answer(10, 9, 2)
            },
            now,
        );
        assert_eq!(learned.window(), Some(Duration::from_secs(30)));
        learned.learn(&answer(100, 99, 60), now);
        assert_eq!(learned.limit, Some(100));
        assert_eq!(learned.window(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_learned_policy_lapses_without_answers_confirming_it() {
        let now = Instant::now();
        let mut learned = Learned::default();
        learned.learn(&answer(10, 9, 6), now);
        assert!(!learned.lapsed(now + LEARNED_TTL));
        assert!(learned.lapsed(now + LEARNED_TTL + Duration::from_secs(1)));
    }
}
