//! What `reporting-etl runs` shows of the shared budgets: each source's configured and announced
//! limit, and the calls and waits per source and process.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One row of the budget summary in `reporting-etl runs`.
#[derive(Debug, Clone)]
pub(crate) struct UsageRow {
    pub source: String,
    pub hostname: String,
    pub pid: i32,
    pub command: String,
    pub running: bool,
    pub calls: i64,
    pub waited_ms: i64,
    pub fallback_calls: i64,
    pub last_call_at: DateTime<Utc>,
}

/// One source's limit as configured and as the upstream's headers announce it (`runs`).
#[derive(Debug, Clone)]
pub(crate) struct LimitRow {
    pub source: String,
    pub calls: i32,
    pub window_ms: i64,
    pub announced_limit: Option<i32>,
    pub announced_window_ms: Option<i64>,
    pub blocked_until: Option<DateTime<Utc>>,
}

/// Every source's configured and announced limit, and its block if one is in force.
pub(crate) async fn limits(pool: &PgPool) -> Result<Vec<LimitRow>> {
    type Columns = (String, i32, i64, Option<i32>, Option<i64>, Option<DateTime<Utc>>);
    let rows: Vec<Columns> = sqlx::query_as(
        "SELECT source, calls, window_ms,
                CASE WHEN announced_until > now() THEN announced_limit END,
                CASE WHEN announced_until > now() THEN announced_window_ms END,
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
/// The processes are described by the store, which owns `etl.instances`.
pub(crate) async fn usage(pool: &PgPool, limit: i64) -> Result<Vec<UsageRow>> {
    type Columns = (String, uuid::Uuid, i64, i64, i64, DateTime<Utc>);
    let rows: Vec<Columns> = sqlx::query_as(
        "SELECT source, instance_id, calls, waited_ms, fallback_calls, last_call_at
         FROM etl.rate_budget_usage
         ORDER BY last_call_at DESC
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("reading the rate-budget usage")?;
    let ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.1).collect();
    let processes = crate::store::instance::describe(pool, &ids).await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(source, instance, calls, waited_ms, fallback_calls, last_call_at)| {
                let process = processes.get(&instance)?.clone();
                Some(UsageRow {
                    source,
                    hostname: process.hostname,
                    pid: process.pid,
                    command: process.command,
                    running: process.running,
                    calls,
                    waited_ms,
                    fallback_calls,
                    last_call_at,
                })
            },
        )
        .collect())
}
