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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use super::headers::RateHeaders;
use super::limiter::{self, DeadlineReached, MIN_WAIT, SAFETY_MARGIN, SourceLimiter};
use crate::config::RateLimit;

/// The longest a budget statement may take before the database counts as unreachable.
pub const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);
/// After the database failed, how long calls stay on the fallback limiter before it is tried again.
pub const RETRY_DATABASE_AFTER: Duration = Duration::from_secs(5);
/// Added to a lease beyond the request timeout and the window: local delays between the
/// database's stamp and the request's start.
pub const LEASE_CUSHION: Duration = Duration::from_secs(5);
/// The shortest pause between two looks at a full budget (a guard against tight loops).
const MIN_POLL: Duration = Duration::from_millis(1);

pub const CALLS_TOTAL: &str = "reporting_etl_rate_budget_calls_total";
pub const WAIT_SECONDS_TOTAL: &str = "reporting_etl_rate_budget_wait_seconds_total";
pub const DATABASE_ERRORS_TOTAL: &str = "reporting_etl_rate_budget_database_errors_total";

/// What every shared source budget of a process needs: the database and who this process is.
#[derive(Clone)]
pub struct BudgetDatabase {
    pool: PgPool,
    instance: Uuid,
    /// The `instance` label of the metrics: the host name, so the label stays low-cardinality
    /// across restarts (the per-process split lives in `etl.rate_budget_usage`).
    label: String,
    fallback_share: f64,
}

impl BudgetDatabase {
    /// `instance` must be this process's row in `etl.instances`.
    pub fn new(pool: PgPool, instance: Uuid, fallback_share: f64) -> BudgetDatabase {
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
pub struct RateBudget {
    local: SourceLimiter,
    shared: Option<Arc<Shared>>,
}

impl RateBudget {
    /// Only this process's limiter (tests, tools, a process without a database).
    pub fn local(limit: RateLimit) -> RateBudget {
        RateBudget {
            local: SourceLimiter::new(limit),
            shared: None,
        }
    }

    /// This process's limiter and the budget every process on `database` shares for `source`.
    /// `request_timeout` bounds a call, so a lease outlasts any call of a process that died.
    pub fn shared(
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
            fallback: SourceLimiter::scaled(limit, database.fallback_share),
            database,
            gate: tokio::sync::Mutex::new(()),
            state: Mutex::new(SharedState::default()),
            waited_ms_total: AtomicU64::new(0),
        };
        RateBudget {
            local: SourceLimiter::new(limit),
            shared: Some(Arc::new(shared)),
        }
    }

    /// Waits for a slot of this process's limiter and then of the shared budget. Fails at once
    /// when the slot would come after `deadline`. Keep the permit until the whole answer is read.
    pub async fn acquire(&self, deadline: Option<Instant>) -> Result<Permit, DeadlineReached> {
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
    pub fn observe(&self, headers: &RateHeaders) {
        let Some(shared) = &self.shared else {
            self.local.observe(headers);
            return;
        };
        // "Nothing remaining" is judged against every process's calls, in the row: this
        // process's own log would see room (the others' calls are not in it) and block until
        // the rounded-up reset for nothing.
        self.local.observe(&RateHeaders {
            remaining: None,
            ..*headers
        });
        shared.fallback.observe(headers);
        shared.observe(
            headers,
            self.local.budget(),
            self.local.learned().window().is_some(),
        );
    }

    /// What the upstream's headers taught this process's limiter.
    pub fn learned(&self) -> limiter::Learned {
        self.local.learned()
    }

    /// Holds every caller of this source back for `wait` (a `Retry-After`), in every process.
    pub fn block_for(&self, wait: Duration) {
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

    /// Calls allowed per window by this process's limiter right now.
    pub fn budget(&self) -> (u32, Duration) {
        self.local.budget()
    }

    /// Whether calls currently go by the fallback limiter (the database was unreachable).
    pub fn in_fallback(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.state().in_fallback)
    }
}

/// A granted call. Dropping it ends the call for both budgets (at that instant).
pub struct Permit {
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

/// The shared part of one source's budget.
struct Shared {
    source: String,
    configured: RateLimit,
    /// `rate_budget.max_wait_secs`: a stored block never reaches further than this from now.
    max_wait: Duration,
    /// Request timeout plus [`LEASE_CUSHION`]; the window is added in SQL.
    lease: Duration,
    /// `fallback_share` of the configured limit, used while the database is unreachable.
    fallback: SourceLimiter,
    database: BudgetDatabase,
    /// One task of this process at a time takes (or waits for) a shared slot of this source, so
    /// a process polls the row once per free slot, not once per waiting task. Held across the
    /// waits, never across a call.
    gate: tokio::sync::Mutex<()>,
    /// Locked briefly by the gate holder, by permits when their call ends, and by `observe`;
    /// never held across an await.
    state: Mutex<SharedState>,
    /// Running total for the wait-seconds counter (the facade's counters are integers).
    waited_ms_total: AtomicU64,
}

#[derive(Default)]
struct SharedState {
    /// The source's row exists (created on first contact by this process).
    registered: bool,
    /// Calls go by the fallback limiter.
    in_fallback: bool,
    /// The database is not tried again before this.
    retry_database_at: Option<Instant>,
    shared_in_flight: usize,
    fallback_in_flight: usize,
    /// Fallback calls not yet added to `etl.rate_budget_usage`.
    fallback_unrecorded: i64,
    /// This process's calls that ended within the last span: (end, made under the fallback).
    recent: VecDeque<(Instant, bool)>,
    /// The announced limit and window last seen in the row, so only changes are written.
    row_limit: Option<u32>,
    row_window_ms: Option<i64>,
}

impl SharedState {
    fn remember(&mut self, end: Instant, fallback: bool, span: Duration) {
        self.recent.push_back((end, fallback));
        while self.recent.front().is_some_and(|(at, _)| at.elapsed() >= span) {
            self.recent.pop_front();
        }
    }
}

/// What the row answered to a take.
enum Take {
    Granted(DateTime<Utc>),
    /// Look again after this long.
    Wait(Duration),
}

/// The row of a budget that had no slot to give.
struct FullBudget {
    /// Milliseconds until `blocked_until`, when it is ahead.
    blocked_ms: Option<f64>,
    /// The limit in force (configured, or lower as announced).
    calls: i32,
    /// For each slot that counts, in how many milliseconds it frees at the earliest, ascending.
    frees_in_ms: Vec<f64>,
    announced_limit: Option<i32>,
    announced_window_ms: Option<i64>,
}

// Written out, not derived: sqlx's derive macro costs every cold build a second compile of sqlx (see build.rs).
impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for FullBudget {
    fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row as _;
        Ok(Self {
            blocked_ms: row.try_get("blocked_ms")?,
            calls: row.try_get("calls")?,
            frees_in_ms: row.try_get("frees_in_ms")?,
            announced_limit: row.try_get("announced_limit")?,
            announced_window_ms: row.try_get("announced_window_ms")?,
        })
    }
}

/// Changes to the row from an answer's headers.
#[derive(Default)]
struct Feedback {
    /// `Some(None)`: the announced limit is gone (the configured one applies again).
    limit: Option<Option<u32>>,
    window_ms: Option<Option<i64>>,
    /// Nobody calls before this long from now (`Retry-After`, an announced limit of 0).
    block: Option<Duration>,
    /// Nothing remaining until this reset: blocks only when the shared log has room (see
    /// `SourceLimiter::observe` for why a full log already waits long enough).
    exhausted: Option<Duration>,
}

impl Feedback {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.window_ms.is_none() && self.block.is_none() && self.exhausted.is_none()
    }
}

/// The span of a finished call in SQL: the longer of the configured and announced window, plus
/// the safety margin, as an interval. `$W` is the configured window in ms, `$F` 1 + margin.
fn span_sql(window: &str, factor: &str) -> String {
    format!(
        "make_interval(secs => coalesce(b.announced_window_ms, {window}::bigint) * {factor}::float8 / 1000.0)"
    )
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, SharedState> {
        // Every update is a few assignments; a panic cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn span(&self) -> Duration {
        let window = self.configured.period();
        window + window.mul_f64(SAFETY_MARGIN)
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.configured.per_ms).unwrap_or(i64::MAX)
    }

    fn calls(&self) -> i32 {
        i32::try_from(self.configured.calls).unwrap_or(i32::MAX)
    }

    async fn acquire(
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

    /// One look at the row: a slot, or how long to wait. `None`: stay on the fallback for now.
    async fn take(&self, started: Instant) -> Result<Option<Take>> {
        let (registered, in_fallback, fallback_in_flight) = {
            let state = self.state();
            (state.registered, state.in_fallback, state.fallback_in_flight)
        };
        if !registered {
            self.register().await?;
        }
        if in_fallback {
            if fallback_in_flight > 0 {
                return Ok(None);
            }
            self.reconcile().await?;
        }
        let waited_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let span = span_sql("$6", "$7");
        let granted: Option<(DateTime<Utc>, Option<i32>, Option<i64>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "WITH granted AS (
                 UPDATE etl.rate_budgets AS b
                 SET slots = array_append(
                         ARRAY(SELECT t FROM unnest(b.slots) AS t WHERE t > now() ORDER BY t),
                         greatest(now() + make_interval(secs => $3::float8 / 1000.0) + {span},
                                  (SELECT max(t) FROM unnest(b.slots) AS t) + interval '1 microsecond')),
                     updated_at = now()
                 WHERE b.source = $1
                   AND (b.blocked_until IS NULL OR b.blocked_until <= now())
                   AND (SELECT count(*) FROM unnest(b.slots) AS t WHERE t > now())
                       < coalesce(b.announced_limit, $2::integer)
                 RETURNING b.slots[cardinality(b.slots)] AS lease, b.announced_limit, b.announced_window_ms
             ), counted AS (
                 INSERT INTO etl.rate_budget_usage AS u (source, instance_id, calls, waited_ms)
                 SELECT $1, $4, 1, $5 FROM granted
                 ON CONFLICT (source, instance_id) DO UPDATE
                 SET calls = u.calls + 1, waited_ms = u.waited_ms + EXCLUDED.waited_ms, last_call_at = now()
             )
             SELECT lease, announced_limit, announced_window_ms FROM granted"
            )))
            .bind(&self.source)
            .bind(self.calls())
            .bind(self.lease.as_secs_f64() * 1000.0)
            .bind(self.database.instance)
            .bind(waited_ms)
            .bind(self.window_ms())
            .bind(1.0 + SAFETY_MARGIN)
            .fetch_optional(&self.database.pool)
            .await
            .with_context(|| format!("taking a slot of {}'s shared rate budget", self.source))?;
        if let Some((lease, limit, window_ms)) = granted {
            self.saw_row(limit, window_ms);
            return Ok(Some(Take::Granted(lease)));
        }

        let span = span_sql("$3", "$4");
        let row: Option<FullBudget> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT CASE WHEN b.blocked_until > now()
                             THEN extract(epoch FROM b.blocked_until - now())::float8 * 1000 END AS blocked_ms,
                        coalesce(b.announced_limit, $2::integer) AS calls,
                        ARRAY(SELECT extract(epoch FROM least(t, now() + {span}) - now())::float8 * 1000
                              FROM unnest(b.slots) AS t WHERE t > now() ORDER BY 1) AS frees_in_ms,
                        b.announced_limit, b.announced_window_ms
                 FROM etl.rate_budgets AS b WHERE b.source = $1"
            )))
            .bind(&self.source)
            .bind(self.calls())
            .bind(self.window_ms())
            .bind(1.0 + SAFETY_MARGIN)
            .fetch_optional(&self.database.pool)
            .await
            .with_context(|| format!("reading {}'s shared rate budget", self.source))?;
        let Some(full) = row else {
            // Someone removed the row: create it again and look once more.
            self.state().registered = false;
            return Ok(Some(Take::Wait(Duration::ZERO)));
        };
        self.saw_row(full.announced_limit, full.announced_window_ms);
        Ok(Some(Take::Wait(wait_for(
            full.blocked_ms,
            full.calls,
            &full.frees_in_ms,
            self.span(),
        ))))
    }

    /// Creates the source's row, or records this process's configuration on it.
    async fn register(&self) -> Result<()> {
        sqlx::query(
            "INSERT INTO etl.rate_budgets (source, calls, window_ms) VALUES ($1, $2, $3)
             ON CONFLICT (source) DO UPDATE
             SET calls = EXCLUDED.calls, window_ms = EXCLUDED.window_ms, updated_at = now(),
                 -- A block stored beyond the cap (by an older version, or by hand) is cut back
                 -- to it: one bad answer must not hold every process back for years.
                 -- (`least` would skip a NULL and turn no block into a block of the cap.)
                 blocked_until = CASE
                     WHEN etl.rate_budgets.blocked_until > now() + make_interval(secs => $4::float8)
                         THEN now() + make_interval(secs => $4::float8)
                     ELSE etl.rate_budgets.blocked_until END",
        )
        .bind(&self.source)
        .bind(self.calls())
        .bind(self.window_ms())
        .bind(self.max_wait.as_secs_f64())
        .execute(&self.database.pool)
        .await
        .with_context(|| format!("registering {}'s shared rate budget", self.source))?;
        self.state().registered = true;
        Ok(())
    }

    /// Back from the fallback: the calls made under it join the shared log (as ages, so no clock
    /// is compared) and the usage table, then the shared budget applies again.
    async fn reconcile(&self) -> Result<()> {
        let (ages_ms, unrecorded): (Vec<f64>, i64) = {
            let state = self.state();
            let ages = state
                .recent
                .iter()
                .filter(|(_, fallback)| *fallback)
                .map(|(at, _)| at.elapsed().as_secs_f64() * 1000.0)
                .collect();
            (ages, state.fallback_unrecorded)
        };
        let span = span_sql("$4", "$5");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH logged AS (
                 UPDATE etl.rate_budgets AS b
                 SET slots = b.slots || ARRAY(
                         SELECT clock_timestamp() - make_interval(secs => age / 1000.0) + {span}
                         FROM unnest($2::float8[]) AS age),
                     updated_at = now()
                 WHERE b.source = $1
                 RETURNING 1
             )
             INSERT INTO etl.rate_budget_usage AS u (source, instance_id, fallback_calls)
             SELECT $1, $3, $6 FROM logged
             ON CONFLICT (source, instance_id) DO UPDATE
             SET fallback_calls = u.fallback_calls + EXCLUDED.fallback_calls, last_call_at = now()"
        )))
        .bind(&self.source)
        .bind(&ages_ms)
        .bind(self.database.instance)
        .bind(self.window_ms())
        .bind(1.0 + SAFETY_MARGIN)
        .bind(unrecorded)
        .execute(&self.database.pool)
        .await
        .with_context(|| format!("recording fallback calls in {}'s shared rate budget", self.source))?;
        let mut state = self.state();
        state.in_fallback = false;
        state.retry_database_at = None;
        state.fallback_unrecorded -= unrecorded;
        tracing::info!(source = %self.source, fallback_calls = unrecorded,
            "The shared rate budget is reachable again.");
        Ok(())
    }

    /// Ends a call in the shared log: from now on it counts until its end plus the span.
    async fn release(&self, lease: DateTime<Utc>) {
        let span = span_sql("$3", "$4");
        let released = tokio::time::timeout(
            DATABASE_TIMEOUT,
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE etl.rate_budgets AS b
                 SET slots = array_replace(b.slots, $2, least($2, clock_timestamp() + {span})),
                     updated_at = now()
                 WHERE b.source = $1"
            )))
            .bind(&self.source)
            .bind(lease)
            .bind(self.window_ms())
            .bind(1.0 + SAFETY_MARGIN)
            .execute(&self.database.pool),
        )
        .await;
        if !matches!(released, Ok(Ok(_))) {
            // Harmless: the slot stays taken until its lease runs out.
            tracing::debug!(source = %self.source, "Could not release a shared rate-budget slot; its lease will run out.");
        }
    }

    /// Remembers what the row says the upstream announced.
    fn saw_row(&self, limit: Option<i32>, window_ms: Option<i64>) {
        let mut state = self.state();
        state.row_limit = limit.and_then(|l| u32::try_from(l).ok());
        state.row_window_ms = window_ms;
    }

    /// Turns an answer's headers into row changes; writes only what differs from the row. The
    /// budget the headers taught this process (`learned`: limit and window, and whether a window
    /// was learned at all) is what every process keeps to; see `SourceLimiter::observe`.
    fn observe(&self, headers: &RateHeaders, learned: (u32, Duration), window_learned: bool) {
        let mut feedback = Feedback::default();
        {
            let state = self.state();
            let (calls, window) = learned;
            let announced = (calls != self.configured.calls).then_some(calls);
            if headers.limit.is_some() && announced != state.row_limit {
                feedback.limit = Some(announced);
            }
            if headers.limit == Some(0) {
                feedback.block = Some(headers.reset.unwrap_or(self.configured.period()).max(MIN_WAIT));
            }
            let announced_window = (window_learned && window != self.configured.period())
                .then(|| i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
            if (headers.window.is_some() || headers.reset.is_some())
                && announced_window != state.row_window_ms
            {
                feedback.window_ms = Some(announced_window);
            }
        }
        if headers.remaining == Some(0)
            && let Some(reset) = headers.reset
        {
            feedback.exhausted = Some(reset.max(MIN_WAIT));
        }
        self.write_feedback(feedback);
    }

    /// Sends row changes in the background: they take effect from the next take, everywhere.
    fn write_feedback(&self, feedback: Feedback) {
        if feedback.is_empty() {
            return;
        }
        {
            // Written optimistically so the next answers do not send the same change again.
            let mut state = self.state();
            if let Some(limit) = feedback.limit {
                state.row_limit = limit;
            }
            if let Some(window) = feedback.window_ms {
                state.row_window_ms = window;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.database.pool.clone();
        let source = self.source.clone();
        let calls = self.calls();
        runtime.spawn(async move {
            let written = tokio::time::timeout(
                DATABASE_TIMEOUT,
                sqlx::query(
                    "UPDATE etl.rate_budgets
                     SET announced_limit = CASE WHEN $2 THEN $3 ELSE announced_limit END,
                         announced_window_ms = CASE WHEN $4 THEN $5 ELSE announced_window_ms END,
                         blocked_until = CASE
                             WHEN $6::float8 IS NOT NULL THEN greatest(coalesce(blocked_until, '-infinity'),
                                 clock_timestamp() + make_interval(secs => $6::float8 / 1000.0))
                             WHEN $7::float8 IS NOT NULL
                                  AND (SELECT count(*) FROM unnest(slots) AS t WHERE t > now())
                                      < coalesce(announced_limit, $8::integer)
                                 THEN greatest(coalesce(blocked_until, '-infinity'),
                                     clock_timestamp() + make_interval(secs => $7::float8 / 1000.0))
                             ELSE blocked_until END,
                         updated_at = now()
                     WHERE source = $1",
                )
                .bind(&source)
                .bind(feedback.limit.is_some())
                .bind(
                    feedback
                        .limit
                        .flatten()
                        .map(|l| i32::try_from(l).unwrap_or(i32::MAX)),
                )
                .bind(feedback.window_ms.is_some())
                .bind(feedback.window_ms.flatten())
                .bind(feedback.block.map(|b| b.as_secs_f64() * 1000.0))
                .bind(feedback.exhausted.map(|b| b.as_secs_f64() * 1000.0))
                .bind(calls)
                .execute(&pool),
            )
            .await;
            if !matches!(written, Ok(Ok(_))) {
                // This process's own limiter already applied it; others learn from their answers.
                tracing::debug!(source = %source, "Could not share the upstream's rate-limit feedback.");
            }
        });
    }
}

/// How long until a full budget may have a free slot: the block, or the moment enough of the
/// busy slots have left (`frees_in_ms`, ascending: when each slot frees at the earliest; a call
/// still in flight frees one span after it ends, so not before one span from now).
fn wait_for(blocked_ms: Option<f64>, calls: i32, frees_in_ms: &[f64], span: Duration) -> Duration {
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

/// One row of the budget summary in `reporting-etl runs`.
#[derive(Debug, Clone)]
pub struct UsageRow {
    pub source: String,
    pub instance_id: Uuid,
    pub hostname: String,
    pub pid: i32,
    pub command: String,
    pub running: bool,
    pub calls: i64,
    pub waited_ms: i64,
    pub fallback_calls: i64,
    pub first_call_at: DateTime<Utc>,
    pub last_call_at: DateTime<Utc>,
}

// Written out, not derived: sqlx's derive macro costs every cold build a second compile of sqlx (see build.rs).
impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for UsageRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row as _;
        Ok(Self {
            source: row.try_get("source")?,
            instance_id: row.try_get("instance_id")?,
            hostname: row.try_get("hostname")?,
            pid: row.try_get("pid")?,
            command: row.try_get("command")?,
            running: row.try_get("running")?,
            calls: row.try_get("calls")?,
            waited_ms: row.try_get("waited_ms")?,
            fallback_calls: row.try_get("fallback_calls")?,
            first_call_at: row.try_get("first_call_at")?,
            last_call_at: row.try_get("last_call_at")?,
        })
    }
}

/// One source's limit as configured and as the upstream's headers announce it (`runs`).
#[derive(Debug, Clone)]
pub struct LimitRow {
    pub source: String,
    pub calls: i32,
    pub window_ms: i64,
    pub announced_limit: Option<i32>,
    pub announced_window_ms: Option<i64>,
    pub blocked_until: Option<DateTime<Utc>>,
}

/// Every source's configured and announced limit, and its block if one is in force.
pub async fn limits(pool: &PgPool) -> Result<Vec<LimitRow>> {
    type Columns = (String, i32, i64, Option<i32>, Option<i64>, Option<DateTime<Utc>>);
    let rows: Vec<Columns> = sqlx::query_as(
        "SELECT source, calls, window_ms, announced_limit, announced_window_ms,
                CASE WHEN blocked_until > now() THEN blocked_until END AS blocked_until
         FROM etl.rate_budgets ORDER BY source",
    )
    .fetch_all(pool)
    .await
    .context("reading the rate budgets")?;
    Ok(rows
        .into_iter()
        .map(
            |(source, calls, window_ms, announced_limit, announced_window_ms, blocked_until)| LimitRow {
                source,
                calls,
                window_ms,
                announced_limit,
                announced_window_ms,
                blocked_until,
            },
        )
        .collect())
}

/// Per source and process, newest activity first: calls made and time spent waiting for budget.
pub async fn usage(pool: &PgPool, limit: i64) -> Result<Vec<UsageRow>> {
    sqlx::query_as(
        "SELECT u.source, u.instance_id, i.hostname, i.pid, i.command, i.stopped_at IS NULL AS running,
                u.calls, u.waited_ms, u.fallback_calls, u.first_call_at, u.last_call_at
         FROM etl.rate_budget_usage u JOIN etl.instances i ON i.id = u.instance_id
         ORDER BY u.last_call_at DESC
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("reading the rate-budget usage")
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
