//! The store: the PostgreSQL pool, embedded migrations, this process's instance record, and the
//! service's own tables (`etl.runs`, `etl.tokens`, `etl.watermarks`, `etl.scope_cache`).
//!
//! Three ways in, all connecting to `database.url` (or starting the embedded default server):
//! [`Store::open`] migrates, registers this process and keeps it alive (commands that run jobs or
//! hold tokens); [`Database::open`] migrates and registers nothing (`migrate`, `auth login`);
//! [`Database::open_read_only`] writes nothing at all, not even a migration, and refuses a schema
//! that is not this binary's (`runs`, `jobs`, `auth status`). Only processes that run jobs sweep
//! dead processes' runs (see [`instance::sweep_dead_instances`]). How migrations are applied
//! beside a running previous release: [`migrations`].

pub mod dictionary;
pub(crate) mod embedded;
pub mod instance;
pub mod locks;
pub mod migrations;
pub mod runs;
pub(crate) mod scope_cache;
pub(crate) mod watermarks;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{Context, Result};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseSettings;
pub use embedded::EmbeddedPostgres;
pub use instance::Instance;
pub use migrations::{SchemaMismatch, migrate};

/// Migrations compiled into the binary (`migrations/`, listed by `build.rs`).
///
/// Built as `sqlx::migrate!` would (same versions, descriptions, checksums; see the test below)
/// without sqlx's proc macros, which cost every cold build a second compile of sqlx and rustls.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let files: &[(i64, &str, &'static str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, name, sql)| {
                // `sqlx::migrate::resolve_blocking`'s rules: the type from the suffix, the description
                // from the rest of the name, and `-- no-transaction` as the first line opting out.
                let migration_type = MigrationType::from_filename(name);
                let description = name.trim_end_matches(migration_type.suffix()).replace('_', " ");
                let no_tx = sql.starts_with("-- no-transaction");
                Migration::new(
                    version,
                    description.into(),
                    migration_type,
                    sql.into_sql_str(),
                    no_tx,
                )
            })
            .collect(),
    )
});

/// An open database this process is not registered in.
pub(crate) struct Database {
    pool: PgPool,
    url: String,
    /// The private server when no URL is configured; stopped by [`Database::close`].
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects (or starts the embedded server) and migrates.
    pub(crate) async fn open(settings: &DatabaseSettings) -> Result<Database> {
        let database = Database::connect(settings).await?;
        migrate(&database.pool).await?;
        Ok(database)
    }

    /// Connects (or starts the embedded server) and checks that the schema is exactly this
    /// binary's ([`migrations::check_current`]) without writing anything: for commands that only
    /// read, which must work for a role that may not change the schema.
    pub(crate) async fn open_read_only(settings: &DatabaseSettings) -> Result<Database> {
        let database = Database::connect(settings).await?;
        migrations::check_current(&database.pool).await?;
        Ok(database)
    }

    async fn connect(settings: &DatabaseSettings) -> Result<Database> {
        let (url, embedded) = database_url(settings).await?;
        let pool = connect(&url, settings.pool_size).await?;
        Ok(Database { pool, url, embedded })
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool and stops an embedded server we started.
    pub(crate) async fn close(mut self) -> Result<()> {
        self.shut_down().await
    }

    async fn shut_down(&mut self) -> Result<()> {
        self.pool.close().await;
        if let Some(mut server) = self.embedded.take() {
            tokio::task::spawn_blocking(move || server.stop())
                .await
                .context("stopping the embedded server")??;
        }
        Ok(())
    }
}

/// An open database with this process registered in it and kept alive.
pub struct Store {
    database: Database,
    instance: Arc<Instance>,
    /// The liveness keeper (heartbeat, lock re-taken after a database restart) and the job-lock
    /// watch; aborted when the store closes or drops.
    background: [tokio::task::JoinHandle<()>; 2],
    /// Advisory locks of the jobs this process runs (one dedicated session).
    job_locks: Arc<locks::JobLocks>,
}

impl Store {
    /// Connects (or starts the embedded server), migrates, registers this process and starts its
    /// liveness keeper. `command` is recorded on the instance row (e.g. `run`, `run --once`).
    pub async fn open(settings: &DatabaseSettings, command: &str) -> Result<Store> {
        let database = Database::open(settings).await?;
        let instance = Instance::register(&database.pool, &database.url, command).await?;
        let job_locks = Arc::new(locks::JobLocks::new(&database.url));
        let background = [
            tokio::spawn(instance.clone().keep_alive()),
            tokio::spawn(job_locks.clone().watch()),
        ];
        Ok(Store {
            database,
            instance,
            background,
            job_locks,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.database.pool
    }

    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    pub fn job_locks(&self) -> Arc<locks::JobLocks> {
        self.job_locks.clone()
    }

    /// The embedded server, when one is in use.
    #[cfg(feature = "sandbox")] // only `demo` uses it
    pub(crate) fn embedded(&self) -> Option<&EmbeddedPostgres> {
        self.database.embedded.as_ref()
    }

    /// Leaves an embedded server this process started running after [`Store::close`] (the demo
    /// does, so a person can connect with psql afterwards).
    #[cfg(feature = "sandbox")] // only `demo` uses it
    pub(crate) fn keep_embedded_running(&mut self) {
        if let Some(server) = self.database.embedded.as_mut() {
            server.keep_running();
        }
    }

    /// Marks this process stopped, closes the pool and stops an embedded server we started.
    pub async fn close(mut self) -> Result<()> {
        // Aborted and awaited: a heartbeat still re-taking the liveness lock would hold it past
        // the stop.
        for task in &mut self.background {
            task.abort();
            let _ = task.await;
        }
        let stopped = self.instance.mark_stopped(&self.database.pool).await;
        self.database.shut_down().await?;
        stopped
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.background.iter().for_each(|task| task.abort());
    }
}

/// Whether an error chain says the database connection broke or could not be made (the server
/// is down, restarting or unreachable) — worth retrying once it answers — rather than that the
/// database refused what we asked.
pub(crate) fn is_connection_error(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut) => true,
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                // 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now.
                code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        })
}

/// The configured URL, or the embedded server's (started on demand).
async fn database_url(settings: &DatabaseSettings) -> Result<(String, Option<EmbeddedPostgres>)> {
    if let Some(url) = &settings.url {
        return Ok((url.expose_secret().to_owned(), None));
    }
    let data_dir = settings.data_dir.clone();
    let server = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data_dir))
        .await
        .context("starting the embedded PostgreSQL server")??;
    tracing::info!(
        data_dir = %server.data_dir().display(),
        psql = %server.psql_hint(),
        "Using the embedded PostgreSQL server (no database.url configured)."
    );
    Ok((server.url(), Some(server)))
}

/// Whether the database refuses writes (`default_transaction_read_only`, or a standby after a
/// failover): then no run can be recorded.
pub(crate) async fn read_only(pool: &PgPool) -> Result<bool> {
    let (read_only,): (bool,) =
        sqlx::query_as("SELECT current_setting('transaction_read_only') = 'on' OR pg_is_in_recovery()")
            .fetch_one(pool)
            .await
            .context("asking whether the database takes writes")?;
    Ok(read_only)
}

/// A pool on `url`. The error names the host, never the password.
pub async fn connect(url: &str, pool_size: u32) -> Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .context("database.url is not a valid PostgreSQL URL")?;
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    );
    PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {target}"))
}

#[cfg(test)]
mod tests {
    use super::MIGRATOR;

    /// The embedded list must be what `sqlx::migrate!` builds from `migrations/` (it calls this same
    /// resolver): a different checksum or description would make sqlx refuse databases migrated
    /// by earlier builds.
    #[test]
    fn embedded_migrations_match_sqlx_resolver() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let expected: Vec<_> = sqlx::migrate::resolve_blocking(&dir)
            .expect("resolving migrations/")
            .into_iter()
            .map(|(m, _)| {
                (
                    m.version,
                    m.description,
                    m.migration_type,
                    m.checksum,
                    m.no_tx,
                    m.sql.as_str().to_owned(),
                )
            })
            .collect();
        let embedded: Vec<_> = MIGRATOR
            .iter()
            .map(|m| {
                let m = m.clone();
                (
                    m.version,
                    m.description,
                    m.migration_type,
                    m.checksum,
                    m.no_tx,
                    m.sql.as_str().to_owned(),
                )
            })
            .collect();
        assert!(!expected.is_empty(), "no migrations found in {}", dir.display());
        assert_eq!(embedded, expected);
    }
}
