//! Staging a window's answers beside its rows, and writing them in its swap.
//!
//! The load's sink stages each page of rows outside any transaction; the answers those rows came
//! from are staged at the same moment, compressed, into a spool: an unlinked temporary file of the
//! loading process (`tempfile::tempfile`, in `TMPDIR` or `/tmp`), which no other process can see
//! and which is gone with the sink, or with the process if it is killed. The swap then writes the
//! window's `archive.windows` row and COPYs the spooled answers into `archive.pages` inside the
//! window's transaction, so the archive of a window commits or rolls back with its rows.
//!
//! Why a file and not a session-temporary table, as the rows are staged: the rows are read by the
//! swap's `INSERT … SELECT`, which must find them in the database; the answers are only copied
//! once into place, so staging them in the database wrote every compressed byte twice (once into
//! the temporary table while the load ran, competing for the CPU with the rows' COPY, and again
//! in the swap). Measured by `benches/load_throughput.rs` (`archive`, `archive_swap`).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Answer, QueryId, Recorder};
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

/// One answer in the spool: what `archive.pages` records of it, and where its frame is.
#[derive(Debug)]
struct Spooled {
    page: i32,
    query: QueryId,
    raw_bytes: i32,
    offset: u64,
    len: usize,
}

/// The window's spool: the file (created with the first answer) and an index of what it holds.
#[derive(Debug, Default)]
struct Spool {
    file: Option<File>,
    answers: Vec<Spooled>,
    end: u64,
}

impl Spool {
    /// Appends one compressed answer.
    fn push(&mut self, answer: Answer) -> anyhow::Result<()> {
        let page = answer.page;
        let raw_bytes = i32::try_from(answer.raw_bytes)
            .with_context(|| format!("answer {page} is too large to archive"))?;
        let frame = answer
            .stored
            .with_context(|| format!("compressing answer {page} for the archive"))?;
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                tempfile::tempfile().context("creating the spool of the window's answers (in TMPDIR)")?,
            ),
        };
        file.write_all(&frame)
            .with_context(|| format!("spooling answer {page} for the archive"))?;
        self.answers.push(Spooled {
            page,
            query: answer.query,
            raw_bytes,
            offset: self.end,
            len: frame.len(),
        });
        self.end += frame.len() as u64;
        Ok(())
    }
}

/// The archive side of one load's sink: its recorder and the spool of what it staged.
#[derive(Debug)]
pub struct Staging {
    recorder: Arc<Recorder>,
    window: ArchiveWindow,
    spool: Arc<Mutex<Spool>>,
}

/// Answers taken from the recorder, to be spooled (in the sink's background COPY task, just
/// before the page's rows).
#[derive(Debug)]
pub struct Batch {
    answers: Vec<Answer>,
    spool: Arc<Mutex<Spool>>,
}

impl Staging {
    /// Staging for the answers `recorder` collects of `window`.
    pub fn new(recorder: Arc<Recorder>, window: ArchiveWindow) -> Staging {
        Staging {
            recorder,
            window,
            spool: Arc::default(),
        }
    }

    /// The answers recorded since the last batch; `None` when there are none.
    pub fn batch(&mut self) -> Option<Batch> {
        let answers = self.recorder.take();
        if answers.is_empty() {
            return None;
        }
        Some(Batch {
            answers,
            spool: self.spool.clone(),
        })
    }

    /// In the window's transaction, after the last batch ended: writes the window's
    /// `archive.windows` row and COPYs its spooled answers into `archive.pages`. Returns the bytes
    /// stored. A window that used no answer archives nothing.
    pub async fn commit(&self, tx: &mut PgConnection) -> anyhow::Result<i64> {
        let spool = std::mem::take(&mut *self.spool.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(file) = spool.file else {
            return Ok(0);
        };
        let started = std::time::Instant::now();
        let w = &self.window;
        let stored = i64::try_from(spool.end).unwrap_or(i64::MAX);
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
        .bind(i32::try_from(spool.answers.len()).unwrap_or(i32::MAX))
        .bind(spool.answers.iter().map(|a| i64::from(a.raw_bytes)).sum::<i64>())
        .bind(stored)
        .execute(&mut *tx)
        .await
        .context("recording the window's archive")?;
        let mut copy = tx
            .copy_in_raw(
                "COPY archive.pages (run_id, page, query_name, query_sha256, raw_bytes, body) \
                 FROM STDIN (FORMAT binary)",
            )
            .await
            .context("starting to archive the window's answers")?;
        let file = Arc::new(file);
        let mut header = COPY_SIGNATURE.to_vec();
        header.extend_from_slice(&0i32.to_be_bytes()); // flags
        header.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        let mut next = Some(header);
        for answer in spool.answers {
            // One answer in memory at a time: its row is read from the spool on the blocking
            // pool while the previous one is sent.
            let (file, run_id) = (file.clone(), w.run_id);
            let reading = tokio::task::spawn_blocking(move || binary_row(run_id, &answer, &file));
            if let Some(bytes) = next.take()
                && let Err(error) = copy.send(bytes).await
            {
                let _ = copy.abort("sending the archive failed").await;
                return Err(error).context("archiving the window's answers");
            }
            match reading.await.map_err(std::io::Error::other).and_then(|r| r) {
                Ok(row) => next = Some(row),
                Err(error) => {
                    let _ = copy.abort("reading the spool failed").await;
                    return Err(error).context("reading the window's spooled answers");
                }
            }
        }
        let mut last = next.unwrap_or_default();
        last.extend_from_slice(&(-1i16).to_be_bytes()); // the end of the rows
        copy.send(last).await.context("archiving the window's answers")?;
        copy.finish().await.context("archiving the window's answers")?;
        Stage::ArchiveSwap.since(started);
        Ok(stored)
    }
}

/// `COPY … (FORMAT binary)`'s signature.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// One `archive.pages` row in COPY's binary format, its body read from the spool.
fn binary_row(run_id: i64, answer: &Spooled, spool: &File) -> std::io::Result<Vec<u8>> {
    let name = answer.query.name.as_bytes();
    let mut row = Vec::with_capacity(2 + 6 * 4 + 8 + 4 + name.len() + 32 + 4 + answer.len);
    // A field is its length then its bytes; every length here is far below i32::MAX (an
    // answer's frame is smaller than the answer, whose length fits `raw_bytes`, an i32).
    fn field(row: &mut Vec<u8>, bytes: &[u8]) {
        row.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        row.extend_from_slice(bytes);
    }
    row.extend_from_slice(&6i16.to_be_bytes());
    field(&mut row, &run_id.to_be_bytes());
    field(&mut row, &answer.page.to_be_bytes());
    field(&mut row, name);
    field(&mut row, &answer.query.sha256);
    field(&mut row, &answer.raw_bytes.to_be_bytes());
    row.extend_from_slice(&(answer.len as i32).to_be_bytes());
    let body = row.len();
    row.resize(body + answer.len, 0);
    spool.read_exact_at(&mut row[body..], answer.offset)?;
    Ok(row)
}

impl Batch {
    /// Spools the answers (on the blocking pool: a page's frames are written to the file).
    pub async fn run(self) -> anyhow::Result<()> {
        let spooling = std::time::Instant::now();
        let Batch { answers, spool } = self;
        tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(|e| e.into_inner());
            answers.into_iter().try_for_each(|answer| spool.push(answer))
        })
        .await
        .context("the archive's spooling task failed")??;
        Stage::Archive.since(spooling);
        Ok(())
    }
}
