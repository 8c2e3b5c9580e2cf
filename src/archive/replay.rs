//! The archived answers of one window, served back to a rebuild in the order the load used them.
//!
//! A rebuild runs a window's load as a load does, with one difference: its calls carry a
//! [`Replay`], and the executor, instead of sending a request, asks it for the next archived
//! answer and decodes that with the same code a load would. The loader asks the same questions in
//! the same order as the load did (its paging follows the answers, which are the same), so the
//! answers are served by their order; the query's name is checked against each, and a query whose
//! text changed since is read if the mapping can read the answer, and fails the window otherwise.
//! Answers are read from the database one at a time, so a rebuild holds one answer in memory.

use std::sync::Mutex;

use anyhow::Context;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use super::{QueryId, short_hex};
use crate::failure::{Failure, FailureKind};

/// The archive of one window, being replayed.
#[derive(Debug)]
pub struct Replay {
    pool: PgPool,
    /// The archived window (`archive.windows.run_id`); `None`: it has no archive.
    archived_run: Option<i64>,
    /// Answers the archive holds for it.
    pages: i32,
    /// The window, for messages ("window 2026-11-01T00:00:00Z/… of scope 99999").
    window: String,
    /// Answers served so far. Locked only to count.
    served: Mutex<i32>,
    /// The next answer, being read while the loader decodes the one before:
    /// a rebuild reads its answers from the database as a load waits for them from the vendor,
    /// and this overlaps the two. At most one answer is read ahead. Locked only to swap it.
    ahead: Mutex<Option<(i32, Reading)>>,
}

/// An answer being read ahead.
type Reading = JoinHandle<Result<Option<Read>, sqlx::Error>>;

/// One archived answer as read from `archive.pages`, still compressed (the answer read ahead
/// is held as its frame, so a rebuild holds one answer as received at a time, as a load does).
#[derive(Debug)]
struct Read {
    name: String,
    sha256: Vec<u8>,
    raw_bytes: i32,
    stored: Vec<u8>,
}

/// Reads answer `page` of the window archived by `run`.
async fn read(pool: PgPool, run: i64, page: i32) -> Result<Option<Read>, sqlx::Error> {
    let row: Option<(String, Vec<u8>, i32, Vec<u8>)> = sqlx::query_as(
        "SELECT query_name, query_sha256, raw_bytes, body FROM archive.pages \
         WHERE run_id = $1 AND page = $2",
    )
    .bind(run)
    .bind(page)
    .fetch_optional(&pool)
    .await?;
    Ok(row.map(|(name, sha256, raw_bytes, stored)| Read {
        name,
        sha256,
        raw_bytes,
        stored,
    }))
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some((_, reading)) = self.ahead.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reading.abort();
        }
    }
}

/// One archived answer, decompressed.
#[derive(Debug)]
pub struct Archived {
    pub page: i32,
    pub body: Vec<u8>,
    /// The query it was archived for.
    pub query: QueryId,
    /// Whether the archived query's text is the one compiled into this binary.
    pub same_text: bool,
}

/// Why an answer could not be served, with the kind of failure it fails its window with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ReplayError {
    pub kind: FailureKind,
    pub message: String,
}

impl Replay {
    /// Replays the answers archived by run `archived_run` (`None`: the window has no archive,
    /// and its first call fails saying so). `window` names the window in messages.
    pub async fn open(pool: &PgPool, archived_run: Option<i64>, window: String) -> anyhow::Result<Replay> {
        let pages = match archived_run {
            Some(run) => sqlx::query_scalar::<_, i32>("SELECT pages FROM archive.windows WHERE run_id = $1")
                .bind(run)
                .fetch_optional(pool)
                .await
                .context("reading the window's archive")?,
            None => None,
        };
        Ok(Replay {
            pool: pool.clone(),
            archived_run: archived_run.filter(|_| pages.is_some()),
            pages: pages.unwrap_or(0),
            window,
            served: Mutex::new(0),
            ahead: Mutex::new(None),
        })
    }

    /// The window this replays, as messages name it.
    pub fn window(&self) -> &str {
        &self.window
    }

    /// The next archived answer, for a call asking `asked`.
    pub async fn next(&self, asked: &QueryId) -> Result<Archived, ReplayError> {
        let Some(run) = self.archived_run else {
            return Err(self.missing());
        };
        let page = {
            let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
            *served += 1;
            *served
        };
        if page > self.pages {
            return Err(ReplayError {
                kind: FailureKind::InvalidAnswer,
                message: format!(
                    "{}: the rebuild asked for answer {page} ({}), but the archive holds {} answer(s) \
                     for it; its rows are kept",
                    self.window, asked.name, self.pages
                ),
            });
        }
        // The answer read ahead while the previous one was decoded, if it is this one.
        let ahead = self
            .ahead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|(at, _)| *at == page);
        let row = match ahead {
            Some((_, reading)) => reading
                .await
                .unwrap_or_else(|e| Err(sqlx::Error::Protocol(e.to_string()))),
            None => read(self.pool.clone(), run, page).await,
        }
        .map_err(|e| ReplayError {
            kind: FailureKind::Database,
            message: format!("{}: reading archived answer {page}: {e}", self.window),
        })?;
        if page < self.pages {
            let reading = tokio::spawn(read(self.pool.clone(), run, page + 1));
            *self.ahead.lock().unwrap_or_else(|e| e.into_inner()) = Some((page + 1, reading));
        }
        let Some(Read {
            name,
            sha256,
            raw_bytes,
            stored,
        }) = row
        else {
            return Err(ReplayError {
                kind: FailureKind::InvalidAnswer,
                message: format!(
                    "{}: archived answer {page} of {} is missing; its rows are kept",
                    self.window, self.pages
                ),
            });
        };
        if name != asked.name {
            return Err(ReplayError {
                kind: FailureKind::SchemaMismatch,
                message: format!(
                    "{}: archived answer {page} was given to query {name}, but the rebuild asks {} \
                     there: the loader no longer asks what the load asked; its rows are kept",
                    self.window, asked.name
                ),
            });
        }
        let body = super::decompress(&stored, usize::try_from(raw_bytes).unwrap_or(0));
        drop(stored);
        let body = body.map_err(|e| ReplayError {
            kind: FailureKind::InvalidAnswer,
            message: format!("{}: archived answer {page} does not decompress: {e}", self.window),
        })?;
        let mut hash = [0u8; 32];
        let same_length = sha256.len() == hash.len();
        if same_length {
            hash.copy_from_slice(&sha256);
        }
        Ok(Archived {
            page,
            body,
            same_text: same_length && hash == asked.sha256,
            query: QueryId { name, sha256: hash },
        })
    }

    /// Fails unless the rebuild used every archived answer: one left over means the loader
    /// stopped before the load did, and the rows of that answer would be lost.
    pub fn check_all_used(&self) -> anyhow::Result<()> {
        let served = *self.served.lock().unwrap_or_else(|e| e.into_inner());
        if self.archived_run.is_none() {
            return Err(Failure::new(FailureKind::InvalidAnswer, no_archive(&self.window)).into());
        }
        if served < self.pages {
            return Err(Failure::invalid_answer(format!(
                "{}: the rebuild used {served} of the {} archived answers; its rows are kept",
                self.window, self.pages
            ))
            .into());
        }
        Ok(())
    }

    /// The message of a decoding failure of an archived answer: when the query's text changed
    /// since it was archived, a schema mismatch saying so.
    pub fn unreadable(
        &self,
        archived: &Archived,
        asked: &QueryId,
        kind: FailureKind,
        cause: &str,
    ) -> ReplayError {
        if archived.same_text {
            ReplayError {
                kind,
                message: format!("{}: archived answer {}: {cause}", self.window, archived.page),
            }
        } else {
            ReplayError {
                kind: FailureKind::SchemaMismatch,
                message: format!(
                    "{}: archived answer {} was given to another text of query {} (sha256 {}…; \
                     this binary's is {}…) and the mapping cannot read it: {cause}; its rows are kept",
                    self.window,
                    archived.page,
                    asked.name,
                    short_hex(&archived.query.sha256),
                    asked.short_hash()
                ),
            }
        }
    }

    fn missing(&self) -> ReplayError {
        ReplayError {
            kind: FailureKind::InvalidAnswer,
            message: no_archive(&self.window),
        }
    }
}

/// Why `window` cannot be rebuilt when its load kept no archive.
pub fn no_archive(window: &str) -> String {
    format!(
        "{window}: no archived answers: the load that wrote it kept no archive (loaded before the \
         archive existed, with archive.keep_days = 0, or deleted after keep_days), so it cannot be \
         rebuilt; its rows are kept"
    )
}
