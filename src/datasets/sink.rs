//! The page writer shared by every dataset: stages a scope's window page by page outside any
//! transaction, then swaps it into its table in one short transaction.
//!
//! A load owns one pool connection (a [`Sink`]) and no transaction while it waits for the
//! vendor. Per load: check the table's primary key is the natural key this code assumes (a
//! silently different key would turn replaces into duplicates), create a session-temporary
//! staging table shaped like the target, and COPY each page into it as it arrives (each COPY
//! commits on its own, so no transaction outlives a page). The COPY of page N runs in the
//! background while the loader fetches and decodes page N+1: at most two pages are in flight.
//! [`Sink::begin_swap`] then opens the window's one transaction: delete the window's rows,
//! insert the staged rows (a record stored under another window, its timestamp moved upstream,
//! is replaced, never a key violation), and hand the transaction
//! back for the run record and the watermark. A record staged twice (offset paging drift, or a
//! page repeating one) is resolved there: the last one staged wins. Until the swap commits,
//! nothing of the load is visible and the previous rows stay; a load that fails or is dropped
//! closes its connection, so its staging tables end with the session.
//!
//! The archive rides along ([`Sink::archive`], see [`crate::archive`]): the answers a page's rows
//! came from are spooled just before the page's COPY, and the swap writes them into the archive in
//! the window's transaction.

use std::fmt::Write as _;

use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};
use tokio::task::JoinHandle;

use super::LoadFigures;
use super::rows::{Column, TableRow};
use crate::archive::Recorder;
use crate::archive::stage::{ArchiveWindow, Staging};
use crate::failure::{Failure, FailureKind};
use crate::stages::Stage;

/// How a dataset's table is laid out.
#[derive(Debug)]
pub struct TableSpec {
    /// Schema-qualified table name, e.g. `retarus.fax_out_udr`.
    pub table: &'static str,
    /// Data columns in the order mapped rows hold them; `source` (first), `_run_id` and
    /// `_loaded_at` are added by the writer.
    pub columns: &'static [&'static str],
    /// The natural key after `source` (the primary key is `source` + this).
    pub key: &'static [&'static str],
    /// Column holding the scope id (customer, company or location), if rows are per scope.
    pub scope_column: Option<&'static str>,
    /// Column the load window applies to (a timestamptz, or a date for daily datasets).
    pub window_column: Option<&'static str>,
    /// Per data column, the PostgreSQL types its row struct's field may be stored in
    /// ([`super::rows::TableRow::column_types`]).
    pub column_types: fn() -> Vec<&'static [&'static str]>,
}

impl TableSpec {
    /// Every column the writer fills, in COPY order.
    pub fn copy_columns(&self) -> Vec<&'static str> {
        let mut all = Vec::with_capacity(self.columns.len() + 2);
        all.push("source");
        all.extend_from_slice(self.columns);
        all.push("_run_id");
        all
    }

    /// The primary key: `source` then the natural key.
    pub fn primary_key(&self) -> Vec<&'static str> {
        let mut key = vec!["source"];
        key.extend_from_slice(self.key);
        key
    }
}

/// Which rows a load replaces.
#[derive(Debug, Clone)]
pub enum Replace {
    /// Every row of the source (and scope, when given).
    All { scope: Option<String> },
    /// Rows of the source and scope whose window column lies in `[start, end)`.
    Instants {
        scope: Option<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// Rows of the source and scope whose window column (a date) lies in `[first, last)`.
    Dates {
        scope: Option<String>,
        first: NaiveDate,
        last: NaiveDate,
    },
}

/// COPY text is sent in pieces of about this size: PostgreSQL starts on the first while the rest
/// is encoded, and no buffer grows (by doubling) to the size of a page.
const CHUNK: usize = 1 << 20;

/// One page's COPY into a staging table, running in the background.
type Copying = JoinHandle<(PoolConnection<Postgres>, anyhow::Result<()>)>;

/// Where one load's rows go: the load's one pool connection, its staging tables, and what the
/// swap does with them. Dropped without [`Sink::finish`] (a failed, timed-out or interrupted
/// load), its connection is closed instead of returned, taking the staging tables with it.
pub struct Sink {
    /// `None` while a page's COPY holds it (see `copying`).
    conn: Option<PoolConnection<Postgres>>,
    copying: Option<Copying>,
    /// Set when the sink is dropped: a COPY still running then closes its connection too.
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Closed writers, applied in order by the swap.
    staged: Vec<Staged>,
    /// Staging tables created on this connection (their names are unique per sink).
    tables: usize,
    /// The swap committed and dropped the staging tables: the connection may go back to the pool.
    clean: bool,
    /// The window's answers, staged alongside its rows when the load is archived.
    archive: Option<Staging>,
    /// Bytes the swap archived (compressed answers); shared so the swap's transaction, which
    /// borrows the sink, can set it.
    archived_bytes: Arc<std::sync::atomic::AtomicI64>,
    /// A test's stand-in for a changed mapping (see [`Remap`]).
    #[cfg(feature = "sandbox")]
    remap: Option<Remap>,
}

/// A changed mapping, for tests (built with the `sandbox` feature only): one column of one table
/// derived differently, `derive` applied to the column's COPY text in every row staged. It lets
/// a test show what a rebuild does after a mapping change without changing a vendor's mapping.
#[cfg(feature = "sandbox")]
#[derive(Debug, Clone, Copy)]
pub struct Remap {
    pub table: &'static str,
    pub column: &'static str,
    pub derive: fn(&str) -> String,
}

#[cfg(feature = "sandbox")]
impl Remap {
    /// `chunks` of COPY text of `spec`'s rows with the column re-derived.
    fn apply(&self, spec: &TableSpec, chunks: Vec<String>) -> Vec<String> {
        let Some(at) = spec.copy_columns().iter().position(|c| *c == self.column) else {
            return chunks;
        };
        if spec.table != self.table {
            return chunks;
        }
        chunks
            .into_iter()
            .map(|chunk| {
                let mut out = String::with_capacity(chunk.len());
                for line in chunk.lines() {
                    let fields: Vec<String> = line
                        .split('\t')
                        .enumerate()
                        .map(|(i, field)| {
                            if i == at {
                                (self.derive)(field)
                            } else {
                                field.to_owned()
                            }
                        })
                        .collect();
                    out.push_str(&fields.join("\t"));
                    out.push('\n');
                }
                out
            })
            .collect()
    }
}

/// A writer's staged load, waiting for the swap.
struct Staged {
    table: &'static str,
    stage: String,
    delete: Option<Delete>,
    insert: String,
    upsert: String,
    dedupe: String,
}

/// The window's old rows (a statement and what it binds).
struct Delete {
    sql: String,
    source: String,
    replace: Replace,
}

impl Sink {
    /// A sink on a connection taken from `pool` (held until the sink is dropped).
    pub async fn acquire(pool: &PgPool) -> anyhow::Result<Sink> {
        let conn = pool.acquire().await.context("taking a connection for the load")?;
        Ok(Sink::new(conn))
    }

    /// A sink on `conn`.
    pub fn new(conn: PoolConnection<Postgres>) -> Sink {
        Sink {
            conn: Some(conn),
            copying: None,
            abandoned: Default::default(),
            staged: Vec::new(),
            tables: 0,
            clean: false,
            archive: None,
            archived_bytes: Arc::default(),
            #[cfg(feature = "sandbox")]
            remap: None,
        }
    }

    /// Derives one column differently in every row this sink stages (tests only, see [`Remap`]).
    #[cfg(feature = "sandbox")]
    pub fn remap(&mut self, remap: Remap) {
        self.remap = Some(remap);
    }

    /// Archives the answers `recorder` collects (the window's calls must carry it too, see
    /// [`crate::executor::CallContext::with_archive`]) as `window`'s, committed with its swap.
    pub fn archive(&mut self, recorder: Arc<Recorder>, window: ArchiveWindow) {
        self.archive = Some(Staging::new(recorder, window));
    }

    /// Bytes of compressed answers the swap archived (0 before it, or when not archiving).
    pub fn archived_bytes(&self) -> i64 {
        self.archived_bytes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The connection, once the COPY in flight (if any) is done; its failure is reported here.
    async fn conn(&mut self) -> anyhow::Result<&mut PgConnection> {
        if let Some(copying) = self.copying.take() {
            let waiting = std::time::Instant::now();
            let joined = copying.await;
            Stage::CopyWait.since(waiting);
            let (conn, outcome) = joined.context("the COPY task failed")?;
            self.conn = Some(conn);
            outcome?;
        }
        self.conn.as_deref_mut().context("the load's connection was lost")
    }

    /// Starts copying `chunks` with `statement` in the background, after the previous COPY.
    /// `what` names the page in errors (which may surface at the next page or at the swap).
    async fn copy(&mut self, statement: String, chunks: Vec<String>, what: String) -> anyhow::Result<()> {
        self.conn().await?;
        let mut conn = self.conn.take().context("the load's connection was lost")?;
        let abandoned = self.abandoned.clone();
        // The answers this page came from, staged just before it.
        let answers = self.archive.as_mut().and_then(Staging::batch);
        self.copying = Some(tokio::spawn(async move {
            let outcome: anyhow::Result<()> = async {
                if let Some(answers) = answers {
                    answers.run().await?;
                }
                let copying = std::time::Instant::now();
                let mut copy = conn
                    .copy_in_raw(&statement)
                    .await
                    .with_context(|| format!("starting to stage {what}"))?;
                for chunk in chunks {
                    if let Err(error) = copy.send(chunk.into_bytes()).await {
                        let _ = copy.abort("sending the page failed").await;
                        return Err(error).with_context(|| format!("staging {what}"));
                    }
                }
                copy.finish().await.with_context(|| format!("staging {what}"))?;
                Stage::Copy.since(copying);
                Ok(())
            }
            .await;
            if abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                conn.close_on_drop();
            }
            (conn, outcome)
        }));
        Ok(())
    }

    /// Waits for the last page, then opens the window's transaction on the load's connection and
    /// swaps every staged load in: its old rows deleted, its staged rows inserted (the last one
    /// staged wins for a key staged twice), its staging table dropped. Returns the transaction
    /// (the caller adds the run record and the watermark, then commits and calls
    /// [`Sink::finish`]) and the distinct rows written.
    pub async fn begin_swap(&mut self) -> anyhow::Result<(Transaction<'_, Postgres>, i64)> {
        let staged = std::mem::take(&mut self.staged);
        let mut archive = self.archive.take();
        let last_answers = archive.as_mut().and_then(Staging::batch);
        let archived_bytes = self.archived_bytes.clone();
        let conn = self.conn().await?;
        if let Some(answers) = last_answers {
            answers.run().await?;
        }
        let swapping = std::time::Instant::now();
        let mut tx = conn.begin().await.context("opening the window's transaction")?;
        let mut rows = 0i64;
        for load in staged {
            let table = load.table;
            if let Some(delete) = &load.delete {
                delete
                    .execute(&mut tx)
                    .await
                    .with_context(|| format!("deleting the rows being replaced in {table}"))?;
            }
            let inserted = {
                // First a plain insert, in a savepoint: cheaper than `ON CONFLICT` row by row,
                // and a conflict is rare (a record staged twice, or stored under another window
                // because its timestamp moved upstream). On one, the staged duplicates go (the
                // last one staged stays) and the upsert replaces what is stored elsewhere.
                let mut attempt = tx.begin().await?;
                match sqlx::query(sqlx::AssertSqlSafe(load.insert.clone()))
                    .execute(&mut *attempt)
                    .await
                {
                    Ok(done) => {
                        attempt.commit().await?;
                        done.rows_affected()
                    }
                    Err(error) if is_unique_violation(&error) => {
                        attempt.rollback().await?;
                        sqlx::query(sqlx::AssertSqlSafe(load.dedupe.clone()))
                            .execute(&mut *tx)
                            .await
                            .with_context(|| format!("dropping records of {table} staged twice"))?;
                        sqlx::query(sqlx::AssertSqlSafe(load.upsert.clone()))
                            .execute(&mut *tx)
                            .await
                            .with_context(|| format!("writing the window into {table}"))?
                            .rows_affected()
                    }
                    Err(error) => {
                        return Err(
                            anyhow::Error::new(error).context(format!("writing the window into {table}"))
                        );
                    }
                }
            };
            rows += i64::try_from(inserted).unwrap_or(i64::MAX);
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE pg_temp.{}", load.stage)))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("dropping the staging table of {table}"))?;
        }
        Stage::Swap.since(swapping);
        if let Some(archive) = &archive {
            let bytes = archive.commit(&mut tx).await?;
            archived_bytes.store(bytes, std::sync::atomic::Ordering::SeqCst);
        }
        Ok((tx, rows))
    }

    /// The swap committed: its staging tables are gone, and the connection goes back to the pool.
    pub fn finish(mut self) {
        self.clean = true;
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.clean {
            return;
        }
        self.abandoned.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}

impl Delete {
    async fn execute(&self, tx: &mut PgConnection) -> Result<u64, sqlx::Error> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql.as_str())).bind(&self.source);
        let scope = match &self.replace {
            Replace::All { scope } | Replace::Instants { scope, .. } | Replace::Dates { scope, .. } => scope,
        };
        if let Some(scope) = scope {
            query = query.bind(scope);
        }
        query = match &self.replace {
            Replace::All { .. } => query,
            Replace::Instants { start, end, .. } => query.bind(*start).bind(*end),
            Replace::Dates { first, last, .. } => query.bind(*first).bind(*last),
        };
        Ok(query.execute(tx).await?.rows_affected())
    }
}

/// An insert met a key that is already there.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// Writes pages of one load into one table's staging table.
pub struct Writer {
    spec: &'static TableSpec,
    source: String,
    stage: String,
    copy_statement: String,
    delete: Option<Delete>,
    /// `source` in COPY text with its tab, written before every row.
    prefix: String,
    /// `_run_id` in COPY text, written after every row's data.
    run_id: String,
    /// Order of staging, written into every row: the last one staged wins a key staged twice.
    seq: i64,
    /// Rows staged so far. The distinct rows written are what [`Sink::begin_swap`] counts.
    pub rows: i64,
    /// Pages (or unpaged calls) read so far.
    pub pages: i32,
}

impl Writer {
    /// Prepares writing into `spec.table`: checks its primary key and creates the staging table.
    pub async fn open(
        sink: &mut Sink,
        spec: &'static TableSpec,
        source: &str,
        run_id: i64,
    ) -> anyhow::Result<Writer> {
        for key in spec.key {
            if !spec.columns.contains(key) {
                bail!("key column {key} is not a column of {}", spec.table);
            }
        }
        sink.tables += 1;
        let stage = format!("etl_stage_{}_{}", spec.table.replace('.', "_"), sink.tables);
        let conn = sink.conn().await?;
        check_primary_key(conn, spec).await?;
        // Session-temporary: nothing else sees it, its writes skip the WAL, and it ends with the
        // session if the load never reaches its swap. `_seq` orders the rows as staged.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS pg_temp.{stage}; \
             CREATE TEMP TABLE {stage} (LIKE {} INCLUDING DEFAULTS, _seq bigint NOT NULL)",
            spec.table
        )))
        .execute(&mut *conn)
        .await
        .with_context(|| format!("creating the staging table for {}", spec.table))?;
        let mut prefix = String::new();
        source.write_copy(&mut prefix);
        Ok(Writer {
            spec,
            source: source.to_owned(),
            copy_statement: format!(
                "COPY pg_temp.{stage} ({}, _seq) FROM STDIN",
                spec.copy_columns().join(", ")
            ),
            stage,
            delete: None,
            prefix,
            run_id: format!("\t{run_id}\t"),
            seq: 0,
            rows: 0,
            pages: 0,
        })
    }

    /// Makes the swap delete `what` (the rows this load replaces) before inserting the load.
    pub async fn replace(&mut self, _sink: &mut Sink, what: &Replace) -> anyhow::Result<()> {
        let (scope, range) = match what {
            Replace::All { scope } => (scope, false),
            Replace::Instants { scope, .. } | Replace::Dates { scope, .. } => (scope, true),
        };
        let mut sql = format!("DELETE FROM {} WHERE source = $1", self.spec.table);
        let mut next = 2;
        if scope.is_some() {
            let column = self
                .spec
                .scope_column
                .with_context(|| format!("{} has no scope column", self.spec.table))?;
            let _ = write!(sql, " AND {column} = ${next}");
            next += 1;
        }
        if range {
            let column = self
                .spec
                .window_column
                .with_context(|| format!("{} has no window column", self.spec.table))?;
            let _ = write!(sql, " AND {column} >= ${next} AND {column} < ${}", next + 1);
        }
        self.delete = Some(Delete {
            sql,
            source: self.source.clone(),
            replace: what.clone(),
        });
        Ok(())
    }

    /// Stages one page of rows (a key repeated within or across pages: the last one wins). The
    /// COPY runs in the background; its failure surfaces at the next write or at the swap.
    pub async fn write<R: TableRow>(&mut self, sink: &mut Sink, rows: Vec<R>) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let encoding = std::time::Instant::now();
        let mut page = self.page();
        for row in rows {
            page.push(&row)?;
        }
        Stage::Encode.since(encoding);
        self.send(sink, page).await
    }

    /// An empty page to encode rows into as they are decoded (see [`PageText`]); hand it to
    /// [`Writer::send`]. Pages are staged in the order they are sent.
    pub fn page(&self) -> PageText {
        PageText::new(self.spec, &self.prefix, &self.run_id, self.seq + 1)
    }

    /// Stages an encoded page. The COPY runs in the background; its failure surfaces at the next
    /// write or at the swap.
    pub async fn send(&mut self, sink: &mut Sink, page: PageText) -> anyhow::Result<()> {
        if page.rows == 0 {
            return Ok(());
        }
        if page.first_seq != self.seq + 1 {
            bail!(
                "a page of {} was encoded before the previous one was staged",
                self.spec.table
            );
        }
        self.rows += page.rows;
        self.seq += page.rows;
        let chunks = page.into_chunks();
        #[cfg(feature = "sandbox")]
        let chunks = match &sink.remap {
            Some(remap) => remap.apply(self.spec, chunks),
            None => chunks,
        };
        let what = format!(
            "page {} of this load into the staging table of {}",
            self.pages.max(1),
            self.spec.table
        );
        sink.copy(self.copy_statement.clone(), chunks, what).await
    }

    /// Hands the staged load to the sink's swap and reports it: the rows staged, the pages read
    /// and `warnings`.
    pub async fn finish(self, sink: &mut Sink, warnings: Vec<String>) -> anyhow::Result<LoadFigures> {
        let figures = LoadFigures {
            rows: self.rows,
            pages: self.pages,
            warnings,
        };
        self.close(sink).await?;
        Ok(figures)
    }

    /// Hands the staged load to the sink's swap.
    pub async fn close(self, sink: &mut Sink) -> anyhow::Result<()> {
        let spec = self.spec;
        let columns = spec.copy_columns().join(", ");
        let updates = spec
            .columns
            .iter()
            .filter(|c| !spec.key.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .chain([
                "_run_id = EXCLUDED._run_id".to_owned(),
                "_loaded_at = now()".to_owned(),
            ])
            .collect::<Vec<_>>()
            .join(", ");
        let same_key = spec
            .key
            .iter()
            .map(|k| format!("a.{k} = b.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let stage = &self.stage;
        sink.staged.push(Staged {
            table: spec.table,
            insert: format!(
                "INSERT INTO {} ({columns}) SELECT {columns} FROM pg_temp.{stage}",
                spec.table
            ),
            upsert: format!(
                "INSERT INTO {} AS t ({columns}) SELECT {columns} FROM pg_temp.{stage} \
                 ON CONFLICT ({}) DO UPDATE SET {updates}",
                spec.table,
                spec.primary_key().join(", ")
            ),
            dedupe: format!(
                "DELETE FROM pg_temp.{stage} a USING pg_temp.{stage} b WHERE {same_key} AND a._seq < b._seq"
            ),
            stage: self.stage,
            delete: self.delete,
        });
        Ok(())
    }
}

/// One page of rows in COPY text, encoded as they come (by [`Writer::write`], or by a decoder
/// straight from the vendor's answer) and kept in pieces of about [`CHUNK`] bytes: no buffer
/// grows by doubling to the size of a page, and no row is kept once written.
pub struct PageText {
    /// The table whose rows this page holds (a row of another table is refused).
    spec: &'static TableSpec,
    /// `source` in COPY text, written before every row.
    prefix: String,
    /// `\t<run id>\t`, written after every row's data.
    run_id: String,
    /// `_seq` of this page's first row (rows count on from the previous page's).
    first_seq: i64,
    chunks: Vec<String>,
    text: String,
    /// Rows encoded so far.
    rows: i64,
}

impl PageText {
    /// An empty page of `spec`'s rows, each starting with `prefix` (the source in COPY text) and
    /// ending with `run_id` (`\t<id>\t`) and its `_seq`, the first `first_seq`.
    fn new(spec: &'static TableSpec, prefix: &str, run_id: &str, first_seq: i64) -> PageText {
        PageText {
            spec,
            prefix: prefix.to_owned(),
            run_id: run_id.to_owned(),
            first_seq,
            chunks: Vec::new(),
            text: String::new(),
            rows: 0,
        }
    }

    /// An empty page of `spec`'s rows for tests of decoders: source `test`, run 1.
    #[cfg(test)]
    pub(crate) fn for_test(spec: &'static TableSpec) -> PageText {
        PageText::new(spec, "test", "\t1\t", 1)
    }

    /// The page's COPY text so far (tests).
    #[cfg(test)]
    pub(crate) fn text(&self) -> String {
        self.chunks.concat() + &self.text
    }

    /// Appends one row.
    pub fn push<R: TableRow>(&mut self, row: &R) -> anyhow::Result<()> {
        if !std::ptr::eq(R::spec(), self.spec) {
            bail!(
                "a row of {} was written into a page of {}",
                R::spec().table,
                self.spec.table
            );
        }
        if self.text.capacity() == 0 {
            self.text.reserve(CHUNK + CHUNK / 8);
        }
        self.text.push_str(&self.prefix);
        row.write_columns(&mut self.text);
        self.text.push_str(&self.run_id);
        Column::write_copy(&(self.first_seq + self.rows), &mut self.text);
        self.text.push('\n');
        self.rows += 1;
        if self.text.len() >= CHUNK {
            self.chunks.push(std::mem::take(&mut self.text));
        }
        Ok(())
    }

    /// Rows encoded so far.
    pub fn rows(&self) -> i64 {
        self.rows
    }

    fn into_chunks(mut self) -> Vec<String> {
        if !self.text.is_empty() {
            self.chunks.push(self.text);
        }
        self.chunks
    }
}

/// Fails unless the table's primary key is exactly `source` + the natural key this code assumes.
async fn check_primary_key(conn: &mut PgConnection, spec: &TableSpec) -> anyhow::Result<()> {
    let actual: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT array_agg(a.attname::text ORDER BY k.ord) \
         FROM pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1::regclass AND i.indisprimary",
    )
    .bind(spec.table)
    .fetch_one(&mut *conn)
    .await
    .with_context(|| {
        format!(
            "reading the primary key of {} (is migration 0002 applied?)",
            spec.table
        )
    })?;
    let expected = spec.primary_key();
    match actual {
        Some(actual) if actual.iter().map(String::as_str).eq(expected.iter().copied()) => Ok(()),
        actual => Err(Failure::new(
            FailureKind::Database,
            format!(
                "{} has primary key {:?}, but its loader replaces rows by ({}); fix the table or the loader",
                spec.table,
                actual.unwrap_or_default(),
                expected.join(", ")
            ),
        )
        .into()),
    }
}
