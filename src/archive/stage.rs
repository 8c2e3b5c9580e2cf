//! Staging a window's answers on the load's own connection, and writing them in its swap.
//!
//! The load's sink owns one connection and stages each page of rows on it outside any
//! transaction; the answers those rows came from go the same way, just before them: compressed,
//! into a session-temporary table (no WAL, gone with the session if the window never commits).
//! The swap then writes the window's `archive.windows` row and moves the staged answers into
//! `archive.pages` inside the window's transaction, so the archive of a window commits or rolls
//! back with its rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Answer, Recorder};
use crate::stages::Stage;

/// Which window the answers belong to (the `archive.windows` row the swap writes).
#[derive(Debug, Clone)]
pub struct ArchiveWindow {
    /// The run loading the window (`etl.runs.id`).
    pub run_id: i64,
    pub job: String,
    pub source: String,
    pub dataset: String,
    /// `etl.runs.scope`.
    pub scope: String,
    /// The scope as the load was given it, so that a rebuild needs no discovery.
    pub scope_target: serde_json::Value,
    /// `None` for snapshots.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// What has been staged so far, added to by the staging batches (which run in the sink's
/// background COPY task) and read by the swap after the last one ended.
#[derive(Debug, Default)]
struct Totals {
    pages: AtomicI64,
    raw_bytes: AtomicI64,
    stored_bytes: AtomicI64,
}

/// The archive side of one load's sink: its recorder, its staging table and what it staged.
#[derive(Debug)]
pub struct Staging {
    recorder: Arc<Recorder>,
    window: ArchiveWindow,
    /// Session-temporary, unique per sink.
    table: String,
    created: bool,
    totals: Arc<Totals>,
}

/// Answers taken from the recorder, to be staged on the load's connection.
#[derive(Debug)]
pub struct Batch {
    table: String,
    create: bool,
    answers: Vec<Answer>,
    totals: Arc<Totals>,
}

impl Staging {
    /// Staging for the answers `recorder` collects of `window`, in a table named after `id`
    /// (unique among the sink's staging tables).
    pub fn new(recorder: Arc<Recorder>, window: ArchiveWindow, id: usize) -> Staging {
        Staging {
            recorder,
            window,
            table: format!("etl_archive_stage_{id}"),
            created: false,
            totals: Arc::default(),
        }
    }

    /// The answers recorded since the last batch; `None` when there are none.
    pub fn batch(&mut self) -> Option<Batch> {
        let answers = self.recorder.take();
        if answers.is_empty() {
            return None;
        }
        let create = !self.created;
        self.created = true;
        Some(Batch {
            table: self.table.clone(),
            create,
            answers,
            totals: self.totals.clone(),
        })
    }

    /// In the window's transaction, after the last batch ended: writes the window's
    /// `archive.windows` row and moves its staged answers into `archive.pages`. Returns the bytes
    /// stored. A window that used no answer archives nothing.
    pub async fn commit(&self, tx: &mut PgConnection) -> anyhow::Result<i64> {
        if !self.created {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let w = &self.window;
        let stored = self.totals.stored_bytes.load(Ordering::SeqCst);
        // A tool or test loading the same window under one run id again replaces its archive.
        sqlx::query("DELETE FROM archive.windows WHERE run_id = $1")
            .bind(w.run_id)
            .execute(&mut *tx)
            .await
            .context("replacing an earlier archive of this run")?;
        sqlx::query(
            "INSERT INTO archive.windows (run_id, job, source, dataset, scope, scope_target, \
             window_start, window_end, pages, raw_bytes, stored_bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(w.run_id)
        .bind(&w.job)
        .bind(&w.source)
        .bind(&w.dataset)
        .bind(&w.scope)
        .bind(&w.scope_target)
        .bind(w.window.map(|(start, _)| start))
        .bind(w.window.map(|(_, end)| end))
        .bind(i32::try_from(self.totals.pages.load(Ordering::SeqCst)).unwrap_or(i32::MAX))
        .bind(self.totals.raw_bytes.load(Ordering::SeqCst))
        .bind(stored)
        .execute(&mut *tx)
        .await
        .context("recording the window's archive")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO archive.pages (run_id, page, query_name, query_sha256, raw_bytes, body) \
             SELECT $1, page, query_name, query_sha256, raw_bytes, body FROM pg_temp.{}",
            self.table
        )))
        .bind(w.run_id)
        .execute(&mut *tx)
        .await
        .context("archiving the window's answers")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE pg_temp.{}", self.table)))
            .execute(&mut *tx)
            .await
            .context("dropping the archive's staging table")?;
        Stage::ArchiveSwap.since(started);
        Ok(stored)
    }
}

impl Batch {
    /// Compresses the answers and stages them on `conn` (outside any transaction).
    pub async fn run(self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if self.create {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS pg_temp.{0}; \
                 CREATE TEMP TABLE {0} (page integer NOT NULL, query_name text NOT NULL, \
                 query_sha256 bytea NOT NULL, raw_bytes integer NOT NULL, body bytea NOT NULL)",
                self.table
            )))
            .execute(&mut *conn)
            .await
            .context("creating the archive's staging table")?;
        }
        let insert = format!(
            "INSERT INTO pg_temp.{} (page, query_name, query_sha256, raw_bytes, body) \
             VALUES ($1, $2, $3, $4, $5)",
            self.table
        );
        for answer in self.answers {
            let (page, query) = (answer.page, answer.query.clone());
            let raw = i32::try_from(answer.raw_bytes)
                .with_context(|| format!("answer {page} is too large to archive"))?;
            let stored = answer
                .stored
                .with_context(|| format!("compressing answer {page} for the archive"))?;
            let staging = std::time::Instant::now();
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(page)
                .bind(&query.name)
                .bind(&query.sha256[..])
                .bind(raw)
                .bind(&stored)
                .execute(&mut *conn)
                .await
                .with_context(|| format!("staging answer {page} for the archive"))?;
            Stage::Archive.since(staging);
            self.totals.pages.fetch_add(1, Ordering::SeqCst);
            self.totals.raw_bytes.fetch_add(raw.into(), Ordering::SeqCst);
            self.totals
                .stored_bytes
                .fetch_add(stored.len() as i64, Ordering::SeqCst);
        }
        Ok(())
    }
}
