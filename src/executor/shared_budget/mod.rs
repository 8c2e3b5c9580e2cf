//! One rate budget per source for every process on the database: replicas and `run --once`
//! backfills spend the vendor's limit together instead of each spending all of it.
//!
//! [`RateBudget`] is what the executor holds per source. It takes this process's own
//! [`SourceLimiter`] slot first (it smooths bursts and keeps the process's tasks in line), then a
//! slot of the shared budget in `etl.rate_budgets`, and gives both back when the answer is in.
//!
//! # Why a sliding log in one row, and not a GCRA
//!
//! A GCRA ("theoretical arrival time") row is one timestamp per source and lets a burst through at
//! the end of one window and another at the start of the next; the vendors count in windows whose
//! edges we cannot see, so only "never more than N calls in ANY window of length T" is safe. That
//! is what the in-process limiter promises ([`super::limiter`]), and the shared budget keeps the
//! same promise with the same log, stored as an array in the source's row: each element is the
//! instant one call stops counting. A call may go when fewer than N elements lie in the future.
//!
//! - **Taking a slot** is one `UPDATE … WHERE <fewer than N count> RETURNING`. Every taker of a
//!   source updates the same row, so PostgreSQL serialises them on its row lock, and a taker that
//!   waited re-checks the condition against the row as the previous one left it (READ
//!   COMMITTED's re-check of an updated row). Two processes can never both take the N-th slot. A
//!   separate slot table would need `FOR UPDATE` on a parent row plus a fresh snapshot of the
//!   children, which one statement does not give.
//! - **A call in flight counts as "now"**: its element is a lease ending after the request
//!   timeout plus a window, so a process that dies mid-call holds its slot only until then.
//! - **When the answer is in**, the element becomes "end + window + margin" (a second short
//!   `UPDATE`, sent in the background). The upstream saw the call between our send and the end
//!   of the answer, so no window of length T at the upstream holds more than N calls.
//! - **Every instant is the database's clock** (`now()`, `clock_timestamp()`), and waits come
//!   back as durations, so processes on hosts with skewed clocks still agree.
//!
//! # What the upstream says
//!
//! Header feedback reaches every process through the row: the limit and window the upstream's
//! headers taught (`announced_limit`, `announced_window_ms`; they win over the configured ones,
//! see `limiter::Learned`) apply to all takers, and
//! `limit = 0` or a `Retry-After` set `blocked_until`, as does `remaining = 0` with a reset when
//! the shared log still has room (someone outside it spends the budget; a full log already waits
//! past the upstream's reset, which comes rounded up to whole seconds).
//!
//! # When the database is unreachable
//!
//! A statement that fails or takes longer than [`DATABASE_TIMEOUT`] switches the source to a
//! fallback limiter allowing `rate_budget.fallback_share` of the limit (never to no limit), and
//! the database is tried again after [`RETRY_DATABASE_AFTER`]. The fallback limiter counts the
//! process's own calls of the last window, so the switch cannot double its spending; on the way
//! back, the calls made under the fallback are written into the shared log first (as ages, so
//! again no clock is compared), then they count for everybody.
//!
//! # Where things are
//!
//! This file: the budget a caller holds and the permit it gets. `shared.rs`: the in-process side
//! of the shared budget (the gate, the fallback switch, metrics, waits). `row.rs`: the statements
//! on `etl.rate_budgets`. `report.rs`: what `reporting-etl runs` reads back.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use super::headers::RateHeaders;
use super::limiter::{self, DeadlineReached, MIN_WAIT, SourceLimiter};
use crate::config::RateLimit;

mod report;
mod row;
mod shared;

pub(crate) use report::{LimitRow, UsageRow, limits, usage};
use row::Feedback;
use shared::{Shared, SharedState};

/// The longest a budget statement may take before the database counts as unreachable.
pub(crate) const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);
/// After the database failed, how long calls stay on the fallback limiter before it is tried again.
pub(crate) const RETRY_DATABASE_AFTER: Duration = Duration::from_secs(5);
/// Added to a lease beyond the request timeout and the window: local delays between the
/// database's stamp and the request's start.
pub(crate) const LEASE_CUSHION: Duration = Duration::from_secs(5);
/// The shortest pause between two looks at a full budget (a guard against tight loops).
const MIN_POLL: Duration = Duration::from_millis(1);

pub(crate) const CALLS_TOTAL: &str = "reporting_etl_rate_budget_calls_total";
pub(crate) const WAIT_SECONDS_TOTAL: &str = "reporting_etl_rate_budget_wait_seconds_total";
pub(crate) const DATABASE_ERRORS_TOTAL: &str = "reporting_etl_rate_budget_database_errors_total";

/// What every shared source budget of a process needs: the database and who this process is.
#[derive(Clone)]
pub(crate) struct BudgetDatabase {
    pool: PgPool,
    instance: Uuid,
    /// The `instance` label of the metrics: the host name, so the label stays low-cardinality
    /// across restarts (the per-process split lives in `etl.rate_budget_usage`).
    label: String,
    fallback_share: f64,
}

impl BudgetDatabase {
    /// `instance` must be this process's row in `etl.instances`.
    pub(crate) fn new(pool: PgPool, instance: Uuid, fallback_share: f64) -> BudgetDatabase {
        let label = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        BudgetDatabase {
            pool,
            instance,
            label,
            fallback_share,
        }
    }
}

/// The rate budget of one source: this process's limiter, plus the budget shared through the
/// database when there is one. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub(crate) struct RateBudget {
    local: SourceLimiter,
    shared: Option<Arc<Shared>>,
}

impl RateBudget {
    /// Only this process's limiter (tests, tools, a process without a database).
    pub(crate) fn local(limit: RateLimit, max_wait: Duration) -> RateBudget {
        RateBudget {
            local: SourceLimiter::new(limit, max_wait),
            shared: None,
        }
    }

    /// This process's limiter and the budget every process on `database` shares for `source`.
    /// `request_timeout` bounds a call, so a lease outlasts any call of a process that died.
    pub(crate) fn shared(
        source: &str,
        limit: RateLimit,
        request_timeout: Duration,
        max_wait: Duration,
        database: BudgetDatabase,
    ) -> RateBudget {
        let shared = Shared {
            source: source.to_owned(),
            configured: limit,
            max_wait,
            lease: request_timeout + LEASE_CUSHION,
            fallback: SourceLimiter::scaled(limit, database.fallback_share, max_wait),
            database,
            gate: tokio::sync::Mutex::new(()),
            state: Mutex::new(SharedState::default()),
            waited_ms_total: AtomicU64::new(0),
        };
        RateBudget {
            local: SourceLimiter::new(limit, max_wait),
            shared: Some(Arc::new(shared)),
        }
    }

    /// Waits for a slot of this process's limiter and then of the shared budget. Fails at once
    /// when the slot would come after `deadline`. Keep the permit until the whole answer is read.
    pub(crate) async fn acquire(&self, deadline: Option<Instant>) -> Result<Permit, DeadlineReached> {
        let started = Instant::now();
        let local = self.local.acquire(deadline).await?;
        let slot = match &self.shared {
            None => Slot::None,
            Some(shared) => shared.acquire(deadline, started).await?,
        };
        Ok(Permit {
            _slot: slot,
            _local: local,
        })
    }

    /// Applies what an answer said about the budget, here and (changes only) for every process.
    /// Returns why the call must fail when the answer names a window beyond the wait cap (see
    /// `SourceLimiter::observe`); every process is then held back for the cap, no longer.
    pub(crate) fn observe(&self, headers: &RateHeaders) -> Option<String> {
        let Some(shared) = &self.shared else {
            return self.local.observe(headers);
        };
        // "Nothing remaining" is judged against every process's calls, in the row: this
        // process's own log would see room (the others' calls are not in it) and block until
        // the rounded-up reset for nothing.
        let held = self.local.observe(&RateHeaders {
            remaining: None,
            ..*headers
        });
        let _ = shared.fallback.observe(headers);
        shared.observe(
            headers,
            self.local.budget(),
            self.local.learned().window().is_some(),
        );
        if held.is_some() {
            shared.write_feedback(Feedback {
                block: Some(shared.max_wait.max(MIN_WAIT)),
                ..Feedback::default()
            });
        }
        held
    }

    /// How long a refusal with these headers holds the source back.
    pub(crate) fn retry_wait(&self, headers: &RateHeaders) -> Option<Duration> {
        self.local.retry_wait(headers)
    }

    /// How long a refusal no limiter learns from (a token endpoint's) holds the source back.
    pub(crate) fn refusal_wait(&self, headers: &RateHeaders) -> Option<Duration> {
        self.local.refusal_wait(headers)
    }

    /// What the upstream's headers taught this process's limiter.
    pub(crate) fn learned(&self) -> limiter::Learned {
        self.local.learned()
    }

    /// Holds every caller of this source back for `wait` (a `Retry-After`), in every process.
    pub(crate) fn block_for(&self, wait: Duration) {
        self.local.block_for(wait);
        if let Some(shared) = &self.shared {
            // Never stored beyond the cap, whatever the caller passed.
            let wait = wait.min(shared.max_wait);
            shared.fallback.block_for(wait);
            shared.write_feedback(Feedback {
                block: Some(wait.max(MIN_WAIT)),
                ..Feedback::default()
            });
        }
    }
}

/// A granted call. Dropping it ends the call for both budgets (at that instant).
pub(crate) struct Permit {
    _slot: Slot,
    _local: limiter::Permit,
}

enum Slot {
    None,
    /// A lease in `etl.rate_budgets`, released in the background on drop.
    Shared {
        shared: Arc<Shared>,
        lease: DateTime<Utc>,
    },
    /// A call under the fallback limiter while the database was unreachable.
    Fallback {
        shared: Arc<Shared>,
        _permit: limiter::Permit,
    },
}

impl Drop for Slot {
    fn drop(&mut self) {
        let now = Instant::now();
        match self {
            Slot::None => {}
            Slot::Shared { shared, lease } => {
                let in_fallback = {
                    let mut state = shared.state();
                    state.shared_in_flight = state.shared_in_flight.saturating_sub(1);
                    state.remember(now, false, shared.span());
                    state.in_fallback
                };
                if in_fallback {
                    // The database went away during this call: the fallback limiter must count it.
                    shared.fallback.record_finished(&[now]);
                }
                let (shared, lease) = (shared.clone(), *lease);
                // No runtime (process shutting down): the lease simply runs out.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { shared.release(lease).await });
                }
            }
            Slot::Fallback { shared, .. } => {
                let mut state = shared.state();
                state.fallback_in_flight = state.fallback_in_flight.saturating_sub(1);
                state.fallback_unrecorded += 1;
                let span = shared.span();
                state.remember(now, true, span);
            }
        }
    }
}
