//! What the archive holds: the windows a rebuild of a job covers, the archive's size per dataset
//! (for `reporting-etl runs` and `/metrics`), and retention (`sources.NAME.archive.keep_days`,
//! enforced by the service).

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// How often the service enforces retention (and once at start-up).
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// One window a rebuild of a job covers: the latest successful load of it, and its archive.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// `etl.runs.scope`.
    pub scope: String,
    /// `None` for snapshots.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The run that loaded it last.
    pub loaded_by: i64,
    /// The scope as that load was given it, when the load was archived (`None`: no archive).
    pub scope_target: Option<serde_json::Value>,
}

/// The windows of `job` a rebuild covers, in the order they were loaded: per scope and window, its
/// latest successful load (rebuilds aside), and that load's archive if it has one. With `range`,
/// only windows that overlap it, and snapshots (which have no window and are always covered).
pub async fn planned_windows(
    pool: &PgPool,
    job: &str,
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> anyhow::Result<Vec<Planned>> {
    let loads = crate::store::runs::latest_loads(pool, job, range).await?;
    let runs: Vec<i64> = loads.iter().map(|(run, ..)| *run).collect();
    let archived: std::collections::HashMap<i64, Option<serde_json::Value>> =
        sqlx::query_as("SELECT run_id, scope_target FROM archive.windows WHERE run_id = ANY($1)")
            .bind(&runs)
            .fetch_all(pool)
            .await
            .with_context(|| format!("reading the archived windows of job {job}"))?
            .into_iter()
            .collect();
    Ok(loads
        .into_iter()
        .map(|(loaded_by, scope, start, end)| Planned {
            scope,
            window: start.zip(end),
            loaded_by,
            scope_target: archived.get(&loaded_by).cloned().flatten(),
        })
        .collect())
}

/// The archive's size of one dataset of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSize {
    pub source: String,
    pub dataset: String,
    pub windows: i64,
    pub pages: i64,
    pub raw_bytes: i64,
    pub stored_bytes: i64,
}

/// The archive's size per source and dataset (`etl.archive_sizes`, readable by a role that may
/// read `etl` only).
pub async fn sizes(pool: &PgPool) -> anyhow::Result<Vec<DatasetSize>> {
    let rows: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT source, dataset, windows, pages, raw_bytes, stored_bytes \
         FROM etl.archive_sizes ORDER BY source, dataset",
    )
    .fetch_all(pool)
    .await
    .context("reading the archive's size")?;
    Ok(rows
        .into_iter()
        .map(
            |(source, dataset, windows, pages, raw_bytes, stored_bytes)| DatasetSize {
                source,
                dataset,
                windows,
                pages,
                raw_bytes,
                stored_bytes,
            },
        )
        .collect())
}

/// Sets `reporting_etl_archive_bytes{source,dataset}` (and `…_archive_windows`) from the
/// database: the archive is written by every process, so it is read at each scrape.
pub async fn publish_sizes(pool: &PgPool) -> anyhow::Result<()> {
    for size in sizes(pool).await? {
        metrics::gauge!("reporting_etl_archive_bytes", "source" => size.source.clone(), "dataset" => size.dataset.clone())
            .set(size.stored_bytes as f64);
        metrics::gauge!("reporting_etl_archive_windows", "source" => size.source, "dataset" => size.dataset)
            .set(size.windows as f64);
    }
    Ok(())
}

/// Deletes the archive of `source` older than `keep_days` (archived before now less that many
/// days; 0 keeps nothing) with its answers. Returns the windows deleted.
pub async fn enforce_retention(pool: &PgPool, source: &str, keep_days: u32) -> anyhow::Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM archive.windows WHERE source = $1 \
         AND archived_at < now() - make_interval(days => $2)",
    )
    .bind(source)
    .bind(i32::try_from(keep_days).unwrap_or(i32::MAX))
    .execute(pool)
    .await
    .with_context(|| format!("deleting the archive of source {source} older than {keep_days} days"))?;
    Ok(deleted.rows_affected())
}

/// [`enforce_retention`] for every `(source, keep_days)`, logging what it deleted and any failure
/// (retention is retried at the next round; it never stops the service).
pub async fn enforce_all(pool: &PgPool, sources: &[(String, u32)]) {
    let mut deleted = 0;
    for (source, keep_days) in sources {
        match enforce_retention(pool, source, *keep_days).await {
            Ok(0) => {}
            Ok(windows) => {
                deleted += windows;
                tracing::info!(source = %source, keep_days, windows,
                    "Deleted archived answers older than the source's archive.keep_days.");
            }
            Err(error) => tracing::warn!(source = %source, error = %format!("{error:#}"),
                "Could not enforce the archive's retention; the next round tries again."),
        }
    }
    tracing::info!(windows = deleted, "Archive retention round done.");
}
