//! The in-process side of one source's shared budget: the gate that lets one task at a time
//! take a slot, the switch to the fallback limiter and back, metrics, and how long a full budget
//! makes a caller wait. The statements on `etl.rate_budgets` are in `row.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::row::Feedback;
use super::{
    BudgetDatabase, CALLS_TOTAL, DATABASE_ERRORS_TOTAL, DATABASE_TIMEOUT, MIN_POLL, RETRY_DATABASE_AFTER,
    Slot, WAIT_SECONDS_TOTAL,
};
use crate::config::RateLimit;
use crate::executor::headers::RateHeaders;
use crate::executor::limiter::{DeadlineReached, LEARNED_TTL, MIN_WAIT, SAFETY_MARGIN, SourceLimiter};

/// The shared part of one source's budget.
pub(super) struct Shared {
    pub(super) source: String,
    pub(super) configured: RateLimit,
    /// `rate_budget.max_wait_secs`: a stored block never reaches further than this from now.
    pub(super) max_wait: Duration,
    /// Request timeout plus [`super::LEASE_CUSHION`]; the window is added in SQL.
    pub(super) lease: Duration,
    /// `fallback_share` of the configured limit, used while the database is unreachable.
    pub(super) fallback: SourceLimiter,
    pub(super) database: BudgetDatabase,
    /// One task of this process at a time takes (or waits for) a shared slot of this source, so
    /// a process polls the row once per free slot, not once per waiting task. Held across the
    /// waits, never across a call.
    pub(super) gate: tokio::sync::Mutex<()>,
    /// Locked briefly by the gate holder, by permits when their call ends, and by `observe`;
    /// never held across an await.
    pub(super) state: Mutex<SharedState>,
    /// Running total for the wait-seconds counter (the facade's counters are integers).
    pub(super) waited_ms_total: AtomicU64,
}

#[derive(Default)]
pub(super) struct SharedState {
    /// The source's row exists (created on first contact by this process).
    pub(super) registered: bool,
    /// Calls go by the fallback limiter.
    pub(super) in_fallback: bool,
    /// The database is not tried again before this.
    pub(super) retry_database_at: Option<Instant>,
    pub(super) shared_in_flight: usize,
    pub(super) fallback_in_flight: usize,
    /// Fallback calls not yet added to `etl.rate_budget_usage`.
    pub(super) fallback_unrecorded: i64,
    /// This process's calls that ended within the last span: (end, made under the fallback).
    pub(super) recent: VecDeque<(Instant, bool)>,
    /// The announced limit and window last seen in the row, so only changes are written.
    pub(super) row_limit: Option<u32>,
    pub(super) row_window_ms: Option<i64>,
    /// When this process last wrote them: they lapse in the row [`LEARNED_TTL`] after, so an
    /// answer confirming them writes them again once half of that has passed.
    pub(super) row_written_at: Option<Instant>,
}

impl SharedState {
    pub(super) fn remember(&mut self, end: Instant, fallback: bool, span: Duration) {
        self.recent.push_back((end, fallback));
        while self.recent.front().is_some_and(|(at, _)| at.elapsed() >= span) {
            self.recent.pop_front();
        }
    }
}

/// What the row answered to a take.
pub(super) enum Take {
    Granted(DateTime<Utc>),
    /// Look again after this long.
    Wait(Duration),
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, SharedState> {
        // Every update is a few assignments; a panic cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn span(&self) -> Duration {
        let window = self.configured.period();
        window + window.mul_f64(SAFETY_MARGIN)
    }

    pub(super) fn window_ms(&self) -> i64 {
        i64::try_from(self.configured.per_ms).unwrap_or(i64::MAX)
    }

    pub(super) fn calls(&self) -> i32 {
        i32::try_from(self.configured.calls).unwrap_or(i32::MAX)
    }

    pub(super) async fn acquire(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        started: Instant,
    ) -> Result<Slot, DeadlineReached> {
        let _gate = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.gate.lock())
                .await
                .map_err(|_| DeadlineReached)?,
            None => self.gate.lock().await,
        };
        loop {
            if self
                .state()
                .retry_database_at
                .is_some_and(|at| Instant::now() < at)
            {
                return self.fallback_acquire(deadline).await;
            }
            let attempt = tokio::time::timeout(DATABASE_TIMEOUT, self.take(started)).await;
            match attempt {
                Ok(Ok(Some(Take::Granted(lease)))) => {
                    self.state().shared_in_flight += 1;
                    self.count("shared", started);
                    return Ok(Slot::Shared {
                        shared: self.clone(),
                        lease,
                    });
                }
                Ok(Ok(Some(Take::Wait(wait)))) => {
                    let until = Instant::now() + wait.max(MIN_POLL);
                    if deadline.is_some_and(|d| d < until) {
                        return Err(DeadlineReached);
                    }
                    tokio::time::sleep_until(until).await;
                }
                // Fallback calls of this process are still in flight: stay on the fallback.
                Ok(Ok(None)) => return self.fallback_acquire(deadline).await,
                Ok(Err(error)) => self.database_lost(&format!("{error:#}")),
                Err(_) => {
                    self.database_lost(&format!("no answer within {} ms", DATABASE_TIMEOUT.as_millis()))
                }
            }
        }
    }

    async fn fallback_acquire(self: &Arc<Self>, deadline: Option<Instant>) -> Result<Slot, DeadlineReached> {
        let permit = self.fallback.acquire(deadline).await?;
        self.state().fallback_in_flight += 1;
        metrics::counter!(CALLS_TOTAL, "source" => self.source.clone(),
            "instance" => self.database.label.clone(), "mode" => "fallback")
        .increment(1);
        Ok(Slot::Fallback {
            shared: self.clone(),
            _permit: permit,
        })
    }

    /// Metrics of one granted shared slot.
    fn count(&self, mode: &'static str, started: Instant) {
        metrics::counter!(CALLS_TOTAL, "source" => self.source.clone(),
            "instance" => self.database.label.clone(), "mode" => mode)
        .increment(1);
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let total = self
            .waited_ms_total
            .fetch_add(ms, Ordering::Relaxed)
            .saturating_add(ms);
        metrics::counter!(WAIT_SECONDS_TOTAL, "source" => self.source.clone(),
            "instance" => self.database.label.clone())
        .absolute(total / 1000);
    }

    /// Switches to the fallback limiter until [`RETRY_DATABASE_AFTER`] from now.
    fn database_lost(&self, error: &str) {
        metrics::counter!(DATABASE_ERRORS_TOTAL, "source" => self.source.clone()).increment(1);
        let recent: Vec<Instant> = {
            let mut state = self.state();
            state.retry_database_at = Some(Instant::now() + RETRY_DATABASE_AFTER);
            if state.in_fallback {
                return;
            }
            state.in_fallback = true;
            let now = Instant::now();
            // Calls still in flight end "now" at the earliest; the rest when they ended.
            let in_flight = std::iter::repeat_n(now, state.shared_in_flight);
            state
                .recent
                .iter()
                .filter(|(_, fallback)| !fallback)
                .map(|(at, _)| *at)
                .chain(in_flight)
                .collect()
        };
        self.fallback.record_finished(&recent);
        let (calls, _) = self.fallback.budget();
        tracing::warn!(source = %self.source, error = %error, calls_per_window = calls,
            window_ms = self.configured.per_ms,
            "The shared rate budget is unreachable; this process keeps to its fallback share of the limit.");
    }

    /// Remembers what the row says the upstream announced.
    pub(super) fn saw_row(&self, limit: Option<i32>, window_ms: Option<i64>) {
        let mut state = self.state();
        state.row_limit = limit.and_then(|l| u32::try_from(l).ok());
        state.row_window_ms = window_ms;
    }

    /// Turns an answer's headers into row changes; writes only what differs from the row. The
    /// budget the headers taught this process (`learned`: limit and window, and whether a window
    /// was learned at all) is what every process keeps to; see `SourceLimiter::observe`.
    pub(super) fn observe(&self, headers: &RateHeaders, learned: (u32, Duration), window_learned: bool) {
        let mut feedback = Feedback::default();
        {
            let state = self.state();
            // `learned` is bounded by the limiter (at least one call, a window within the cap).
            let (calls, window) = learned;
            let announced = (calls != self.configured.calls).then_some(calls.max(1));
            // Confirmed values are written again before they lapse in the row.
            let stale = state
                .row_written_at
                .is_none_or(|at| at.elapsed() > LEARNED_TTL / 2);
            if headers.limit.is_some() && (announced != state.row_limit || (stale && announced.is_some())) {
                feedback.limit = Some(announced);
            }
            if headers.limit.is_some_and(|l| l.get() == 0) {
                feedback.block = Some(
                    headers
                        .reset
                        .map_or(self.configured.period(), |r| r.get())
                        .min(self.max_wait)
                        .max(MIN_WAIT),
                );
            }
            let announced_window = (window_learned && window != self.configured.period())
                .then(|| i64::try_from(window.min(self.max_wait).as_millis()).unwrap_or(i64::MAX));
            if (headers.window.is_some() || headers.reset.is_some())
                && (announced_window != state.row_window_ms || (stale && announced_window.is_some()))
            {
                feedback.window_ms = Some(announced_window);
            }
        }
        if headers.remaining.is_some_and(|r| r.get() == 0)
            && let Some(reset) = headers.reset
        {
            feedback.exhausted = Some(reset.get().min(self.max_wait).max(MIN_WAIT));
        }
        self.write_feedback(feedback);
    }
}

/// How long until a full budget may have a free slot: the block, or the moment enough of the
/// busy slots have left (`frees_in_ms`, ascending: when each slot frees at the earliest; a call
/// still in flight frees one span after it ends, so not before one span from now).
pub(super) fn wait_for(blocked_ms: Option<f64>, calls: i32, frees_in_ms: &[f64], span: Duration) -> Duration {
    let ms = |v: f64| Duration::from_secs_f64((v.max(0.0)) / 1000.0);
    if let Some(blocked) = blocked_ms.filter(|b| *b > 0.0) {
        return ms(blocked);
    }
    let busy = frees_in_ms.len();
    let calls = usize::try_from(calls).unwrap_or(0);
    if busy < calls {
        return Duration::ZERO; // a slot freed since the take: try again now
    }
    // `busy - calls + 1` slots must leave before one may be taken.
    match frees_in_ms.get(busy - calls) {
        Some(v) => ms(*v),
        None => span, // a limit of 0 announced without a reset: look again in a window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_wins_over_everything_else() {
        let wait = wait_for(Some(250.0), 5, &[], Duration::from_secs(1));
        assert_eq!(wait, Duration::from_millis(250));
    }

    #[test]
    fn a_full_budget_waits_for_the_slot_that_brings_it_below_the_limit() {
        let span = Duration::from_secs(1);
        // Five busy, limit five: the earliest leaving frees one.
        let frees = [100.0, 200.0, 300.0, 400.0, 500.0];
        assert_eq!(wait_for(None, 5, &frees, span), Duration::from_millis(100));
        // Limit lowered to three: three must leave.
        assert_eq!(wait_for(None, 3, &frees, span), Duration::from_millis(300));
        // A slot freed since the take: no wait.
        assert_eq!(wait_for(None, 6, &frees, span), Duration::ZERO);
        // Nothing allowed and no reset: look again in a window.
        assert_eq!(wait_for(None, 0, &frees, span), span);
    }
}
