//! The page writer shared by every dataset: replaces a scope's window in its table inside the
//! caller's transaction, one upstream page at a time.
//!
//! Per load: check the table's primary key is the natural key this code assumes (a silently
//! different key would turn replaces into duplicates), delete the window's rows, then for each
//! page: drop duplicates within the page (last one wins), COPY the page into a session-temporary
//! staging table shaped like the target, and `INSERT … SELECT … ON CONFLICT (key) DO UPDATE` from
//! it. A record seen again on a later page (offset paging drift) or already stored under another
//! window (its timestamp moved upstream) is replaced, never a key violation. Only one page is
//! ever held in memory.

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;

use super::rows::Row;
use crate::failure::{Failure, FailureKind};

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

/// Which rows a load replaces before writing.
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

/// Writes pages of one load into one table.
pub struct Writer {
    spec: &'static TableSpec,
    source: String,
    run_id: i64,
    stage: String,
    key_index: Vec<usize>,
    copy_statement: String,
    upsert_statement: String,
    /// Replaces rows this load wrote on an earlier page; only run when a page repeats some.
    refresh_statement: String,
    /// Distinct rows this load wrote so far.
    pub rows: i64,
    /// Pages (or unpaged calls) read so far.
    pub pages: i32,
}

impl Writer {
    /// Prepares writing into `spec.table`: checks its primary key and creates the staging table.
    pub async fn open(
        tx: &mut PgConnection,
        spec: &'static TableSpec,
        source: &str,
        run_id: i64,
    ) -> anyhow::Result<Writer> {
        check_primary_key(tx, spec).await?;
        let key_index = spec
            .key
            .iter()
            .map(|k| {
                spec.columns
                    .iter()
                    .position(|c| c == k)
                    .with_context(|| format!("key column {k} is not a column of {}", spec.table))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let stage = format!("etl_stage_{}", spec.table.replace('.', "_"));
        // A session-temporary table (not ON COMMIT DROP) so the writer also works on a
        // connection in autocommit mode; `close` drops it, and a rollback undoes its creation.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {} INCLUDING DEFAULTS)",
            spec.table
        )))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("creating the staging table for {}", spec.table))?;
        let columns = spec.copy_columns().join(", ");
        let key = spec.primary_key();
        let on_key = key
            .iter()
            .map(|k| format!("t.{k} = s.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
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
        let refresh = spec
            .columns
            .iter()
            .filter(|c| !spec.key.contains(c))
            .map(|c| format!("{c} = s.{c}"))
            .chain(["_loaded_at = now()".to_owned()])
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Writer {
            spec,
            source: source.to_owned(),
            run_id,
            copy_statement: format!("COPY pg_temp.{stage} ({columns}) FROM STDIN"),
            // Rows this very load already wrote (seen again on a later page) are left to
            // `refresh_statement`, so what this statement reports is exactly the new rows. The
            // previous way, counting them first with a join of the staging table against the
            // target, let the planner (the staging table has no statistics) hash-join against a
            // sequential scan of the whole target on every page: quadratic in the load's size.
            upsert_statement: format!(
                "INSERT INTO {} AS t ({columns}) SELECT {columns} FROM pg_temp.{stage} \
                 ON CONFLICT ({}) DO UPDATE SET {updates} \
                 WHERE t._run_id IS DISTINCT FROM EXCLUDED._run_id",
                spec.table,
                key.join(", ")
            ),
            refresh_statement: format!(
                "UPDATE {} t SET {refresh} FROM pg_temp.{stage} s WHERE {on_key} AND t._run_id = $1",
                spec.table
            ),
            stage,
            key_index,
            rows: 0,
            pages: 0,
        })
    }

    /// Deletes the rows this load replaces.
    pub async fn replace(&mut self, tx: &mut PgConnection, what: &Replace) -> anyhow::Result<u64> {
        let (scope, range) = match what {
            Replace::All { scope } => (scope, None),
            Replace::Instants { scope, .. } | Replace::Dates { scope, .. } => (scope, Some(())),
        };
        let mut sql = format!("DELETE FROM {} WHERE source = $1", self.spec.table);
        let mut next = 2;
        if scope.is_some() {
            let column = self
                .spec
                .scope_column
                .with_context(|| format!("{} has no scope column", self.spec.table))?;
            sql.push_str(&format!(" AND {column} = ${next}"));
            next += 1;
        }
        if range.is_some() {
            let column = self
                .spec
                .window_column
                .with_context(|| format!("{} has no window column", self.spec.table))?;
            sql.push_str(&format!(" AND {column} >= ${next} AND {column} < ${}", next + 1));
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&self.source);
        if let Some(scope) = scope {
            query = query.bind(scope);
        }
        query = match what {
            Replace::All { .. } => query,
            Replace::Instants { start, end, .. } => query.bind(*start).bind(*end),
            Replace::Dates { first, last, .. } => query.bind(*first).bind(*last),
        };
        let done = query
            .execute(&mut *tx)
            .await
            .with_context(|| format!("deleting the rows being replaced in {}", self.spec.table))?;
        Ok(done.rows_affected())
    }

    /// Writes one page of rows (duplicates within the page: the last one wins).
    pub async fn write(&mut self, tx: &mut PgConnection, rows: Vec<Row>) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let width = self.spec.columns.len();
        if let Some(bad) = rows.iter().find(|r| r.len() != width) {
            bail!(
                "a mapped row of {} has {} cells, the table has {width} data columns",
                self.spec.table,
                bad.len()
            );
        }
        let rows = self.dedupe(rows);
        let mut text = String::with_capacity(rows.len() * 256);
        let mut source = String::new();
        super::rows::Cell::from(self.source.as_str()).write_copy(&mut source);
        // Formatted once per page rather than once per row.
        let run_id = format!("\t{}\n", self.run_id);
        for row in &rows {
            text.push_str(&source);
            for cell in row {
                text.push('\t');
                cell.write_copy(&mut text);
            }
            text.push_str(&run_id);
        }
        let table = self.spec.table;
        sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE pg_temp.{}", self.stage)))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("clearing the staging table of {table}"))?;
        let mut copy = tx
            .copy_in_raw(&self.copy_statement)
            .await
            .with_context(|| format!("starting COPY into the staging table of {table}"))?;
        if let Err(error) = copy.send(text.as_bytes()).await {
            let _ = copy.abort("sending the page failed").await;
            return Err(error).with_context(|| format!("copying a page into the staging table of {table}"));
        }
        copy.finish()
            .await
            .with_context(|| format!("copying a page into the staging table of {table}"))?;
        let done = sqlx::query(sqlx::AssertSqlSafe(self.upsert_statement.clone()))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("writing a page into {table}"))?;
        // Every staged row was inserted or replaced except those this load already wrote (seen
        // on an earlier page): those are replaced now, and are not new rows.
        let written = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        if written < i64::try_from(rows.len()).unwrap_or(i64::MAX) {
            sqlx::query(sqlx::AssertSqlSafe(self.refresh_statement.clone()))
                .bind(self.run_id)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("replacing rows of {table} an earlier page of this load wrote"))?;
        }
        self.rows += written;
        Ok(())
    }

    /// Drops the staging table.
    pub async fn close(self, tx: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS pg_temp.{}",
            self.stage
        )))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("dropping the staging table of {}", self.spec.table))?;
        Ok(())
    }

    fn dedupe(&self, rows: Vec<Row>) -> Vec<Row> {
        let key_of = |row: &Row| -> String {
            self.key_index
                .iter()
                .map(|&i| row.get(i).map(|c| c.key_text()).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\u{1f}")
        };
        let mut last = std::collections::HashMap::with_capacity(rows.len());
        for (index, row) in rows.iter().enumerate() {
            last.insert(key_of(row), index);
        }
        if last.len() == rows.len() {
            return rows;
        }
        rows.into_iter()
            .enumerate()
            .filter(|(index, row)| last.get(&key_of(row)) == Some(index))
            .map(|(_, row)| row)
            .collect()
    }
}

/// Notices an upstream whose pages lie: a non-empty page made only of records this load already
/// read (pages cycling A, B, A, B… or A, B, C, A…; a page repeated at once), a cursor or page
/// number it already answered, and at the end a row count that disagrees with the total the
/// vendor announced. Comparing with the previous page only let a cycle of period 2 run its course
/// as a "successful" load that kept 10 rows of 9,300. A page that merely overlaps earlier ones
/// (offset paging drift) is fine: the writer replaces those records.
#[derive(Debug, Default)]
pub struct SeenInLoad {
    /// A hash of the natural key of every record read in this load.
    records: std::collections::HashSet<u64>,
    /// Every cursor or page position the upstream answered with.
    positions: std::collections::HashSet<String>,
}

impl SeenInLoad {
    /// Refuses `rows` (every record of the page, skipped ones included) when all of them were
    /// read before in this load; remembers them otherwise.
    pub fn check_records<'a>(
        &mut self,
        spec: &TableSpec,
        rows: impl IntoIterator<Item = &'a Row>,
    ) -> anyhow::Result<()> {
        use std::hash::{Hash, Hasher};
        let keys: Vec<u64> = rows
            .into_iter()
            .map(|row| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                for key in spec.key {
                    let cell = spec
                        .columns
                        .iter()
                        .position(|c| c == key)
                        .and_then(|i| row.get(i));
                    cell.map(|c| c.key_text()).hash(&mut hasher);
                }
                hasher.finish()
            })
            .collect();
        if !keys.is_empty() && keys.iter().all(|k| self.records.contains(k)) {
            return Err(Failure::invalid_answer(format!(
                "the page holds only records an earlier page of this load already had ({} of them); \
                 the upstream is cycling through its pages, so the load stopped and nothing of it is kept",
                keys.len()
            ))
            .into());
        }
        self.records.extend(keys);
        Ok(())
    }

    /// Refuses a cursor or page position (`what` names it in the error) seen before in this load.
    pub fn check_position(&mut self, what: &str, position: &str) -> anyhow::Result<()> {
        if !self.positions.insert(format!("{what}\u{1f}{position}")) {
            return Err(Failure::invalid_answer(format!(
                "the upstream answered with {what} `{position}` a second time in this load; \
                 its paging runs in a circle, so the load stopped and nothing of it is kept"
            ))
            .into());
        }
        Ok(())
    }

    /// Refuses a load whose distinct records disagree with the total the vendor announced.
    pub fn check_total(&self, announced: Option<i64>) -> anyhow::Result<()> {
        let read = i64::try_from(self.records.len()).unwrap_or(i64::MAX);
        match announced {
            Some(total) if total != read => Err(Failure::invalid_answer(format!(
                "the upstream announced {total} record(s) but its pages held {read} distinct one(s); \
                 the load is not kept"
            ))
            .into()),
            _ => Ok(()),
        }
    }
}

/// Fails unless the table's primary key is exactly `source` + the natural key this code assumes.
async fn check_primary_key(tx: &mut PgConnection, spec: &TableSpec) -> anyhow::Result<()> {
    let actual: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT array_agg(a.attname::text ORDER BY k.ord) \
         FROM pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1::regclass AND i.indisprimary",
    )
    .bind(spec.table)
    .fetch_one(&mut *tx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::rows::Cell;

    static SPEC: TableSpec = TableSpec {
        table: "test.records",
        columns: &["id", "value"],
        key: &["id"],
        scope_column: None,
        window_column: None,
    };

    fn page(ids: &[&str]) -> Vec<Row> {
        ids.iter()
            .map(|id| vec![Cell::from(*id), Cell::from("v")])
            .collect()
    }

    #[test]
    fn pages_cycling_with_period_two_or_three_are_refused_and_drift_is_not() {
        for period in [2usize, 3] {
            let pages = [page(&["a1", "a2"]), page(&["b1", "b2"]), page(&["c1", "c2"])];
            let mut seen = SeenInLoad::default();
            for (n, rows) in pages.iter().cycle().take(period).enumerate() {
                seen.check_records(&SPEC, rows.iter())
                    .unwrap_or_else(|e| panic!("page {n} is new: {e}"));
            }
            let again = seen.check_records(&SPEC, pages[0].iter());
            assert!(
                again.is_err_and(|e| e.to_string().contains("cycling")),
                "period {period}"
            );
        }
        // Offset drift: a page that overlaps an earlier one but brings new records is fine.
        let mut seen = SeenInLoad::default();
        seen.check_records(&SPEC, page(&["a1", "a2"]).iter())
            .expect("new");
        seen.check_records(&SPEC, page(&["a2", "a3"]).iter())
            .expect("overlap with new");
    }

    #[test]
    fn a_cursor_seen_before_and_a_total_that_disagrees_are_refused() {
        let mut seen = SeenInLoad::default();
        seen.check_position("cursor", "A").expect("new");
        seen.check_position("cursor", "B").expect("new");
        assert!(seen.check_position("cursor", "A").is_err());
        seen.check_records(&SPEC, page(&["a1", "a2"]).iter())
            .expect("new");
        seen.check_total(Some(2)).expect("agrees");
        seen.check_total(None).expect("nothing announced");
        let error = seen.check_total(Some(9300)).expect_err("disagrees");
        assert!(error.to_string().contains("announced 9300"), "{error}");
    }
}
