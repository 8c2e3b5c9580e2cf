//! Job locks across processes: PostgreSQL session advisory locks `(JOB_LOCK_CLASS,
//! hashtext(job))`, all held on one dedicated connection of this process.
//!
//! A dedicated connection (not a pool one) because a lock lives as long as its session: holding
//! one pool connection per running job would starve the pool that the same jobs need for their
//! load transactions and token reads. If the connection breaks (database restart), its locks are
//! gone with it; the next lock attempt reconnects.

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

/// First key of job advisory locks ("ETL\x01"); the second is `hashtext(job name)`.
pub const JOB_LOCK_CLASS: i32 = 0x4554_4c01;

/// This process's job locks.
pub struct JobLocks {
    url: String,
    /// The session holding every job lock of this process. Locked only for one short statement.
    connection: Mutex<Option<PgConnection>>,
}

impl JobLocks {
    pub fn new(url: &str) -> JobLocks {
        JobLocks {
            url: url.to_owned(),
            connection: Mutex::new(None),
        }
    }

    /// Takes the job's lock; `false` if another process holds it.
    pub async fn try_lock(&self, job: &str) -> Result<bool> {
        let mut guard = self.connection.lock().await;
        if guard.is_none() {
            *guard = Some(
                PgConnection::connect(&self.url)
                    .await
                    .context("opening the job-lock connection")?,
            );
        }
        let connection = guard.as_mut().expect("connected above");
        let result: Result<(bool,), sqlx::Error> =
            sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(JOB_LOCK_CLASS)
                .bind(job)
                .fetch_one(&mut *connection)
                .await;
        match result {
            Ok((locked,)) => Ok(locked),
            Err(error) => {
                // A broken session holds no locks any more; reconnect next time.
                *guard = None;
                Err(error).context("taking the job lock")
            }
        }
    }

    /// Releases the job's lock (a no-op if the session was lost meanwhile).
    pub async fn unlock(&self, job: &str) {
        let mut guard = self.connection.lock().await;
        if let Some(connection) = guard.as_mut()
            && sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
                .bind(JOB_LOCK_CLASS)
                .bind(job)
                .execute(&mut *connection)
                .await
                .is_err()
        {
            *guard = None;
        }
    }
}
