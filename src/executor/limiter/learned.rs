//! What an upstream's rate-limit headers teach about its budget ([`Learned`]): the limit, and the
//! window named by the vendor or inferred from successive resets.

use std::time::Duration;

use crate::executor::headers::RateHeaders;

/// How much a reset in whole seconds can exceed the time actually left (it is rounded up).
const RESET_ROUNDING: Duration = Duration::from_secs(1);

/// The longest window a header can teach: beyond it a reset is not a window but a block (a daily
/// quota, a vendor's mistake), which the wait cap deals with.
pub(crate) const MAX_LEARNED_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The upstream's limit as its headers state it. Headers are the vendor's word: once both a limit
/// and a window are known they replace the configured budget, in either direction.
///
/// The window comes from a `;w=` policy when the vendor names it. Otherwise it is inferred from
/// successive resets: the first call of a fixed window (`remaining = limit - 1`) is answered with
/// a reset of (at most a rounding above) the whole window, and every later answer of it with less.
/// The shortest such "fresh" reset seen is the estimate (rounding only ever adds to it); until one
/// is seen, the longest reset seen stands in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    pub limit: Option<u32>,
    /// From `;w=`: the vendor said so, nothing to infer.
    pub named_window: Option<Duration>,
    /// The shortest reset announced on the first call of a window.
    pub fresh_reset: Option<Duration>,
    /// The longest reset announced on any answer.
    pub longest_reset: Option<Duration>,
}

impl Learned {
    /// The window as far as the headers tell it.
    pub fn window(&self) -> Option<Duration> {
        // A window that starts with its first call answers that call with the whole window,
        // but one aligned to the clock answers its first call with whatever is left of it:
        // the shortest fresh reset alone could then be far too short, which loosens the budget
        // into 429s. Every reset is at most the window (plus rounding to whole seconds), so
        // the longest one seen, less that rounding, is a floor that rises to the true window.
        let inferred = match (self.fresh_reset, self.longest_reset) {
            (Some(fresh), Some(longest)) => Some(fresh.max(longest.saturating_sub(RESET_ROUNDING))),
            (fresh, longest) => fresh.or(longest),
        };
        self.named_window
            .or(inferred)
            .filter(|w| !w.is_zero())
            .map(|w| w.min(MAX_LEARNED_WINDOW))
    }

    /// Takes in one answer's headers; true when the budget they imply changed.
    pub(super) fn learn(&mut self, headers: &RateHeaders) -> bool {
        let before = *self;
        if let Some(limit) = headers.limit {
            self.limit = Some(limit);
        }
        if let Some(window) = headers.window {
            self.named_window = Some(window);
        }
        if let Some(reset) = headers.reset.filter(|r| !r.is_zero() && *r <= MAX_LEARNED_WINDOW) {
            let fresh = matches!((self.limit, headers.remaining), (Some(l), Some(r)) if l >= 1 && r == l - 1);
            if fresh {
                self.fresh_reset = Some(self.fresh_reset.map_or(reset, |f| f.min(reset)));
            }
            self.longest_reset = Some(self.longest_reset.map_or(reset, |l| l.max(reset)));
        }
        self.budget_changed_from(&before)
    }

    fn budget_changed_from(&self, before: &Learned) -> bool {
        (self.limit, self.window()) != (before.limit, before.window())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::limiter::tests::answer;

    #[test]
    fn a_window_starting_with_its_first_call_is_learned_from_the_first_answer() {
        let mut learned = Learned::default();
        learned.learn(&answer(10, 9, 6));
        assert_eq!(learned.window(), Some(Duration::from_secs(6)));
        learned.learn(&answer(10, 8, 5));
        learned.learn(&answer(10, 7, 4));
        assert_eq!(learned.window(), Some(Duration::from_secs(6)));
    }

    #[test]
    fn a_clock_aligned_window_first_seen_near_its_end_is_not_taken_for_a_short_one() {
        // 60-second windows on the clock; our first call lands 5 s before a boundary.
        let mut learned = Learned::default();
        learned.learn(&answer(10, 9, 5));
        learned.learn(&answer(10, 8, 4));
        // The next window's first call, right at its start, tells the whole window.
        learned.learn(&answer(10, 9, 60));
        learned.learn(&answer(10, 8, 59));
        let window = learned.window().expect("a window");
        assert!(window >= Duration::from_secs(59), "{window:?}");
    }

    #[test]
    fn a_named_window_wins_over_inference() {
        let mut learned = Learned::default();
        learned.learn(&RateHeaders {
            window: Some(Duration::from_secs(30)),
            ..answer(10, 9, 2)
        });
        assert_eq!(learned.window(), Some(Duration::from_secs(30)));
    }
}
