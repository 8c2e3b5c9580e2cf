//! The scope cache (`etl.scope_cache`): per source, what the last scope discovery found upstream,
//! shared by every job and process on the database. Discovery costs rate budget (Roubler: one
//! `viewer` call plus one `locations` call per company), and the answer changes rarely, so jobs
//! use the cached answer while it is younger than the source's `discovery_ttl_secs`.
//!
//! Ages are measured on the database's clock, so processes on hosts with skewed clocks agree on
//! when an entry expires. The value is opaque JSON here; `datasets::scope` gives it its shape.

use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::PgPool;

/// The cached discovery of `source` if it is younger than `ttl`; `None` when there is none or it
/// has expired (a zero `ttl` never finds one).
pub(crate) async fn fresh(pool: &PgPool, source: &str, ttl: Duration) -> Result<Option<serde_json::Value>> {
    let ttl_secs = ttl.as_secs_f64();
    let row: Option<(serde_json::Value,)> = sqlx::query_as(
        "SELECT scopes FROM etl.scope_cache
         WHERE source = $1 AND discovered_at > now() - make_interval(secs => $2)",
    )
    .bind(source)
    .bind(ttl_secs)
    .fetch_optional(pool)
    .await
    .with_context(|| format!("reading the cached scopes of source {source}"))?;
    Ok(row.map(|(scopes,)| scopes))
}

/// Stores a discovery just made (replacing any earlier one).
pub(crate) async fn store(pool: &PgPool, source: &str, scopes: &serde_json::Value) -> Result<()> {
    sqlx::query(
        "INSERT INTO etl.scope_cache (source, scopes, discovered_at) VALUES ($1, $2, now())
         ON CONFLICT (source) DO UPDATE SET scopes = EXCLUDED.scopes, discovered_at = EXCLUDED.discovered_at",
    )
    .bind(source)
    .bind(scopes)
    .execute(pool)
    .await
    .with_context(|| format!("storing the discovered scopes of source {source}"))?;
    Ok(())
}

/// Drops the cached discovery of `source`, so that the next job asks the vendor again. Returns
/// whether there was one.
pub(crate) async fn invalidate(pool: &PgPool, source: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM etl.scope_cache WHERE source = $1")
        .bind(source)
        .execute(pool)
        .await
        .with_context(|| format!("dropping the cached scopes of source {source}"))?;
    Ok(done.rows_affected() > 0)
}
