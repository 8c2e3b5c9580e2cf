//! The store: the PostgreSQL pool, embedded migrations, this process's instance record, and the
//! service's own tables (`etl.runs`, `etl.tokens`, `etl.watermarks`).
//!
//! [`Store::open`] is the one way in: it connects to `database.url` or starts the embedded
//! default server, applies migrations, registers this process, and marks runs left `running`
//! by dead processes as `interrupted`.

pub mod dictionary;
pub mod embedded;
pub mod instance;
pub mod locks;
pub mod runs;
pub mod watermarks;

use std::time::Duration;

use anyhow::{Context, Result};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseSettings;
pub use embedded::EmbeddedPostgres;
pub use instance::Instance;

/// Migrations compiled into the binary (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// An open database with this process registered in it.
pub struct Store {
    pool: PgPool,
    instance: Instance,
    /// Advisory locks of the jobs this process runs (one dedicated session).
    job_locks: std::sync::Arc<locks::JobLocks>,
    /// The private server when no URL is configured; stopped by [`Store::close`].
    embedded: Option<EmbeddedPostgres>,
}

impl Store {
    /// Connects (or starts the embedded server), migrates, registers this process and sweeps runs
    /// of dead processes. `command` is recorded on the instance row (e.g. `run`, `run --once`).
    pub async fn open(settings: &DatabaseSettings, command: &str) -> Result<Store> {
        let (url, embedded) = database_url(settings).await?;
        let pool = connect(&url, settings.pool_size).await?;
        migrate(&pool).await?;
        let instance = Instance::register(&pool, &url, command).await?;
        let swept = instance::sweep_dead_instances(&pool, instance.id()).await?;
        if swept > 0 {
            tracing::warn!(
                runs = swept,
                "Marked runs of processes that died mid-run as interrupted."
            );
        }
        Ok(Store {
            pool,
            instance,
            job_locks: std::sync::Arc::new(locks::JobLocks::new(&url)),
            embedded,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    pub fn job_locks(&self) -> std::sync::Arc<locks::JobLocks> {
        self.job_locks.clone()
    }

    /// The embedded server, when one is in use.
    pub fn embedded(&self) -> Option<&EmbeddedPostgres> {
        self.embedded.as_ref()
    }

    /// Leaves an embedded server this process started running after [`Store::close`] (the demo
    /// does, so a person can connect with psql afterwards).
    pub fn keep_embedded_running(&mut self) {
        if let Some(server) = self.embedded.as_mut() {
            server.keep_running();
        }
    }

    /// Marks this process stopped, closes the pool and stops an embedded server we started.
    pub async fn close(self) -> Result<()> {
        let Store {
            pool,
            instance,
            embedded,
            job_locks,
        } = self;
        drop(job_locks);
        instance.mark_stopped(&pool).await?;
        pool.close().await;
        if let Some(mut server) = embedded {
            tokio::task::spawn_blocking(move || server.stop())
                .await
                .context("stopping the embedded server")??;
        }
        Ok(())
    }
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

/// Applies every pending migration. Safe to run any number of times.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await.context("applying database migrations")
}
