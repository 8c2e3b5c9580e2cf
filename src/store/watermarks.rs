//! Watermarks (`etl.watermarks`): per job and scope, the end of the last window the forward
//! schedule loaded. Moved only forward, and only in the transaction that loaded the window.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// The current high-water mark of a job and scope.
pub(crate) async fn get(pool: &PgPool, job: &str, scope: &str) -> Result<Option<DateTime<Utc>>> {
    let row: Option<(DateTime<Utc>,)> =
        sqlx::query_as("SELECT high_water FROM etl.watermarks WHERE job = $1 AND scope = $2")
            .bind(job)
            .bind(scope)
            .fetch_optional(pool)
            .await
            .with_context(|| format!("reading the watermark of {job} for scope {scope}"))?;
    Ok(row.map(|(mark,)| mark))
}

/// Moves the mark to `to` unless it is already further (a re-run of an old window never moves
/// it back). Runs inside the window's transaction.
pub(crate) async fn advance(
    tx: &mut PgConnection,
    job: &str,
    scope: &str,
    to: DateTime<Utc>,
    run_id: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO etl.watermarks (job, scope, high_water, last_run_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (job, scope) DO UPDATE
         SET high_water = EXCLUDED.high_water, last_run_id = EXCLUDED.last_run_id, updated_at = now()
         WHERE etl.watermarks.high_water < EXCLUDED.high_water",
    )
    .bind(job)
    .bind(scope)
    .bind(to)
    .bind(run_id)
    .execute(tx)
    .await
    .with_context(|| format!("moving the watermark of {job} for scope {scope}"))?;
    Ok(())
}
