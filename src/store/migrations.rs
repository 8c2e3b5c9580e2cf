//! Which migrations a database holds, and applying this binary's so that the previous release
//! keeps running beside it during a rolling update (see `docs/migrations.md`).
//!
//! **Two ledgers.** Migrations 1–8 are recorded in sqlx's `_sqlx_migrations`, and that ledger is
//! frozen: every release up to the one that introduced this module runs sqlx's migrator, which
//! refuses to start (exit 1, "migration N was previously applied but is missing in the resolved
//! migrations") when that table holds a version it does not know. A later migration recorded
//! there would stop the previous release from restarting mid-rollout even when the migration is
//! harmless to it. So migrations from 9 on are recorded in [`LEDGER`], which those releases never
//! read, and this binary reads both.
//!
//! **A schema newer than the binary** (a version in either ledger this binary does not embed) is
//! refused with [`SchemaMismatch::Newer`] before anything is written, and read-only commands
//! refuse a schema behind the binary with [`SchemaMismatch::Behind`] rather than migrate it: they
//! must work for a role that may not change the schema. Both are exit code 2.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use anyhow::{Context, Result};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use super::MIGRATOR;

/// The last version recorded in sqlx's own ledger, `_sqlx_migrations` (see the module comment:
/// never raise it).
pub const LAST_SQLX_LEDGER_VERSION: i64 = 8;

/// Where migrations after [`LAST_SQLX_LEDGER_VERSION`] are recorded (same columns as
/// `_sqlx_migrations`; created by sqlx's migrator on first use).
pub const LEDGER: &str = "etl.schema_migrations";

/// sqlx's ledger as sqlx names it: unqualified, found through the role's `search_path`.
const SQLX_LEDGER: &str = "_sqlx_migrations";

/// The embedded migrations split by ledger: sqlx's (1–8) and ours (9 on).
static LEDGERS: LazyLock<[Migrator; 2]> = LazyLock::new(|| {
    let (old, new): (Vec<_>, Vec<_>) = MIGRATOR
        .iter()
        .cloned()
        .partition(|m| m.version <= LAST_SQLX_LEDGER_VERSION);
    let sqlx_ledger = Migrator::with_migrations(old);
    let mut ours = Migrator::with_migrations(new);
    ours.dangerous_set_table_name(LEDGER);
    [sqlx_ledger, ours]
});

/// The database's schema does not match this binary's and the command cannot go on (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaMismatch {
    /// The database holds migrations this binary does not know: a newer release migrated it.
    #[error(
        "the database is at schema {database}, newer than this binary (≤ {binary}): upgrade the \
         binary, or run the newer one"
    )]
    Newer { database: i64, binary: i64 },
    /// The database lacks migrations this binary needs, and the command may not apply them.
    #[error(
        "the database is at schema {database}, older than this binary (schema {binary}): run \
         `reporting-etl migrate` (or start `reporting-etl run`, which migrates) first"
    )]
    Behind { database: SchemaVersion, binary: i64 },
}

/// A database's schema version as far as this role can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaVersion {
    /// The newest migration applied.
    At(i64),
    /// sqlx's ledger exists but this role may not read it and ours does not exist yet: the
    /// database is somewhere in 1–8.
    AtMostSqlxLedger,
}

impl std::fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaVersion::At(version) => write!(f, "{version}"),
            SchemaVersion::AtMostSqlxLedger => write!(f, "{LAST_SQLX_LEDGER_VERSION} or older"),
        }
    }
}

/// The newest migration this binary embeds.
pub fn binary_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Applies every pending migration, each recorded in its ledger. Refuses a database a newer
/// release has migrated ([`SchemaMismatch::Newer`]) before changing anything. Safe to run any
/// number of times, and by several processes at once (sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<()> {
    refuse_newer(&applied(pool).await?)?;
    for ledger in LEDGERS.iter() {
        if let Err(error) = ledger.run(pool).await {
            // A newer release may have migrated between our look and sqlx's: say so, not sqlx's
            // "previously applied but is missing".
            if let Ok(applied) = applied(pool).await {
                refuse_newer(&applied)?;
            }
            return Err(error).context("applying database migrations");
        }
    }
    Ok(())
}

/// Checks, without writing anything, that the database holds exactly this binary's migrations:
/// what read-only commands do instead of migrating.
pub async fn check_current(pool: &PgPool) -> Result<()> {
    let applied = applied(pool).await?;
    refuse_newer(&applied)?;
    let binary = binary_version();
    let behind = match &applied {
        Applied::Known(versions) => MIGRATOR
            .iter()
            .any(|m| !versions.contains(&m.version))
            .then(|| SchemaVersion::At(versions.last().copied().unwrap_or(0))),
        Applied::SqlxLedgerUnreadable => Some(SchemaVersion::AtMostSqlxLedger),
    };
    match behind {
        Some(database) => Err(SchemaMismatch::Behind { database, binary }.into()),
        None => Ok(()),
    }
}

/// What the ledgers say.
#[derive(Debug)]
enum Applied {
    /// The versions applied successfully, ascending.
    Known(BTreeSet<i64>),
    /// sqlx's ledger exists, this role may not read it, and ours is absent or empty.
    SqlxLedgerUnreadable,
}

fn refuse_newer(applied: &Applied) -> Result<(), SchemaMismatch> {
    let Applied::Known(versions) = applied else {
        return Ok(());
    };
    let known: BTreeSet<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    match versions.iter().find(|v| !known.contains(v)) {
        Some(_) => Err(SchemaMismatch::Newer {
            database: versions.last().copied().unwrap_or(0),
            binary: binary_version(),
        }),
        None => Ok(()),
    }
}

/// Reads both ledgers. Needs no privilege but SELECT on them; a ledger that does not exist yet
/// holds nothing. Ours is only written once sqlx's is complete, so when it has rows and this role
/// may not read sqlx's (a role that reads `etl` may well not read `public._sqlx_migrations`),
/// sqlx's is taken to hold migrations 1–8.
async fn applied(pool: &PgPool) -> Result<Applied> {
    let ours = match read_ledger(pool, LEDGER).await? {
        Ledger::Unreadable => anyhow::bail!(
            "cannot tell the database's schema version: this role may not read {LEDGER} \
             (GRANT SELECT ON {LEDGER} TO it)"
        ),
        Ledger::Absent => BTreeSet::new(),
        Ledger::Rows(versions) => versions,
    };
    let sqlx_ledger = match read_ledger(pool, SQLX_LEDGER).await? {
        Ledger::Rows(versions) => versions,
        Ledger::Absent => BTreeSet::new(),
        Ledger::Unreadable if ours.is_empty() => return Ok(Applied::SqlxLedgerUnreadable),
        Ledger::Unreadable => LEDGERS[0].iter().map(|m| m.version).collect(),
    };
    Ok(Applied::Known(sqlx_ledger.into_iter().chain(ours).collect()))
}

/// One ledger table as this role sees it.
enum Ledger {
    Absent,
    Unreadable,
    /// The versions applied successfully.
    Rows(BTreeSet<i64>),
}

async fn read_ledger(pool: &PgPool, table: &str) -> Result<Ledger> {
    let (exists, readable): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass($1) IS NOT NULL, \
                COALESCE(has_table_privilege(to_regclass($1), 'SELECT'), false)",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .with_context(|| format!("looking for the migrations ledger {table}"))?;
    if !exists {
        return Ok(Ledger::Absent);
    }
    if !readable {
        return Ok(Ledger::Unreadable);
    }
    let versions: Vec<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {table} WHERE success ORDER BY version"
    )))
    .fetch_all(pool)
    .await
    .with_context(|| format!("reading the migrations ledger {table}"))?;
    Ok(Ledger::Rows(versions.into_iter().map(|(v,)| v).collect()))
}
