//! The statements on a source's row in `etl.rate_budgets`: taking a slot (or learning how long
//! to wait), registering the source, merging fallback calls back, releasing a lease, and writing
//! what the upstream's headers said.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::DATABASE_TIMEOUT;
use super::shared::{Shared, Take, wait_for};
use crate::executor::limiter::{LEARNED_TTL, SAFETY_MARGIN};

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
pub(super) struct Feedback {
    /// `Some(None)`: the announced limit is gone (the configured one applies again).
    pub(super) limit: Option<Option<u32>>,
    pub(super) window_ms: Option<Option<i64>>,
    /// Nobody calls before this long from now (`Retry-After`, an announced limit of 0).
    pub(super) block: Option<Duration>,
    /// Nothing remaining until this reset: blocks only when the shared log has room (see
    /// `SourceLimiter::observe` for why a full log already waits long enough).
    pub(super) exhausted: Option<Duration>,
}

impl Feedback {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.window_ms.is_none() && self.block.is_none() && self.exhausted.is_none()
    }
}

/// The announced limit while it stands: announced values lapse at `announced_until` (a learned
/// policy is evidence, re-learned from later answers, never a standing order).
const ANNOUNCED_LIMIT: &str = "(CASE WHEN b.announced_until > now() THEN b.announced_limit END)";
const ANNOUNCED_WINDOW_MS: &str = "(CASE WHEN b.announced_until > now() THEN b.announced_window_ms END)";

/// The span of a finished call in SQL: the announced window while it stands, else the
/// configured one, plus the safety margin, as an interval. `window` is the configured window in
/// ms, `factor` 1 + margin.
fn span_sql(window: &str, factor: &str) -> String {
    format!(
        "make_interval(secs => coalesce({ANNOUNCED_WINDOW_MS}, {window}::bigint) * {factor}::float8 / 1000.0)"
    )
}

impl Shared {
    /// One look at the row: a slot, or how long to wait. `None`: stay on the fallback for now.
    pub(super) async fn take(&self, started: Instant) -> Result<Option<Take>> {
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
                       < coalesce({ANNOUNCED_LIMIT}, $2::integer)
                 RETURNING b.slots[cardinality(b.slots)] AS lease, {ANNOUNCED_LIMIT} AS announced_limit,
                           {ANNOUNCED_WINDOW_MS} AS announced_window_ms
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
                        coalesce({ANNOUNCED_LIMIT}, $2::integer) AS calls,
                        ARRAY(SELECT extract(epoch FROM least(t, now() + {span}) - now())::float8 * 1000
                              FROM unnest(b.slots) AS t WHERE t > now() ORDER BY 1) AS frees_in_ms,
                        {ANNOUNCED_LIMIT} AS announced_limit, {ANNOUNCED_WINDOW_MS} AS announced_window_ms
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

    /// Creates the source's row, or records this process's configuration on it. Whatever the
    /// row holds beyond this process's bounds (written by an older version, another
    /// configuration, or by hand) is cut back to them: one bad answer must not hold every
    /// process back for longer than the cap.
    async fn register(&self) -> Result<()> {
        sqlx::query(
            "INSERT INTO etl.rate_budgets AS b (source, calls, window_ms) VALUES ($1, $2, $3)
             ON CONFLICT (source) DO UPDATE
             SET calls = EXCLUDED.calls, window_ms = EXCLUDED.window_ms, updated_at = now(),
                 -- (`least` would skip a NULL and turn no block into a block of the cap.)
                 blocked_until = CASE
                     WHEN b.blocked_until > now() + make_interval(secs => $4::float8)
                         THEN now() + make_interval(secs => $4::float8)
                     ELSE b.blocked_until END,
                 announced_limit = CASE WHEN b.announced_limit >= 1 THEN b.announced_limit END,
                 -- (`least` skips a NULL: it would turn 'none announced' into the cap.)
                 announced_window_ms = CASE WHEN b.announced_window_ms > ($4::float8 * 1000)::bigint
                     THEN ($4::float8 * 1000)::bigint ELSE b.announced_window_ms END,
                 announced_until = CASE WHEN b.announced_until > now() + make_interval(secs => $5::float8)
                     THEN now() + make_interval(secs => $5::float8) ELSE b.announced_until END,
                 -- A call counts for a lease plus a window at most.
                 slots = ARRAY(SELECT least(t, now() + make_interval(secs => $4::float8 * 2 + $6::float8))
                               FROM unnest(b.slots) AS t ORDER BY 1)",
        )
        .bind(&self.source)
        .bind(self.calls())
        .bind(self.window_ms())
        .bind(self.max_wait.as_secs_f64())
        .bind(LEARNED_TTL.as_secs_f64())
        .bind(self.lease.as_secs_f64())
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
    pub(super) async fn release(&self, lease: DateTime<Utc>) {
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
    /// Sends row changes in the background: they take effect from the next take, everywhere.
    pub(super) fn write_feedback(&self, feedback: Feedback) {
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
            if feedback.limit.is_some() || feedback.window_ms.is_some() {
                state.row_written_at = Some(Instant::now());
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.database.pool.clone();
        let source = self.source.clone();
        let calls = self.calls();
        let max_wait_ms = self.max_wait.as_secs_f64() * 1000.0;
        runtime.spawn(async move {
            let written = tokio::time::timeout(
                DATABASE_TIMEOUT,
                // Every value is held to its bound here too (limit >= 1, window and waits within
                // the cap), whatever the caller computed: the row speaks for every process.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE etl.rate_budgets AS b
                     SET announced_limit = CASE WHEN NOT $2 THEN b.announced_limit
                             WHEN $3 < 1 THEN 1 ELSE $3 END,
                         announced_window_ms = CASE WHEN NOT $4 THEN b.announced_window_ms
                             WHEN $5 > ($9::float8)::bigint THEN ($9::float8)::bigint ELSE $5 END,
                         announced_until = CASE WHEN $2 OR $4
                             THEN clock_timestamp() + make_interval(secs => $10::float8)
                             ELSE b.announced_until END,
                         blocked_until = CASE
                             WHEN $6::float8 IS NOT NULL THEN greatest(coalesce(b.blocked_until, '-infinity'),
                                 clock_timestamp() + make_interval(secs => least($6::float8, $9::float8) / 1000.0))
                             WHEN $7::float8 IS NOT NULL
                                  AND (SELECT count(*) FROM unnest(b.slots) AS t WHERE t > now())
                                      < coalesce({ANNOUNCED_LIMIT}, $8::integer)
                                 THEN greatest(coalesce(b.blocked_until, '-infinity'),
                                     clock_timestamp() + make_interval(secs => least($7::float8, $9::float8) / 1000.0))
                             ELSE b.blocked_until END,
                         updated_at = now()
                     WHERE b.source = $1"
                )))
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
                .bind(max_wait_ms)
                .bind(LEARNED_TTL.as_secs_f64())
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
