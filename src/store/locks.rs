//! Job locks across processes: PostgreSQL session advisory locks `(JOB_LOCK_CLASS,
//! hashtext(job))`, all held on one dedicated connection (the *lock session*) of this process.
//!
//! A dedicated connection (not a pool one) because a lock lives as long as its session: holding
//! one pool connection per running job would starve the pool that the same jobs need for their
//! load transactions and token reads.
//!
//! A lock is only as good as its session: a database restart ends the session and frees every
//! lock on it while the jobs keep running, and another process could then take a job and run it
//! concurrently. So a lock knows when it is lost: [`JobLocks::watch`] probes the session every
//! [`WATCH_INTERVAL`] and announces a broken one at once (windows running under it stop and roll
//! back), and a load checks [`still_held`] inside its own transaction just before committing.

use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection, PgExecutor};
use tokio::sync::{Mutex, watch};

/// First key of job advisory locks ("ETL\x01"); the second is `hashtext(job name)`.
pub const JOB_LOCK_CLASS: i32 = 0x4554_4c01;

/// How often the lock session is probed: a lost lock is noticed within this long of the database
/// going away — long before the database is back and another process could take the lock.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How long a probe of the lock session may take before the session counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// This process's job locks.
pub struct JobLocks {
    url: String,
    /// The session holding every job lock of this process. Locked only for one short statement.
    session: Mutex<Option<LockSession>>,
    /// The lock-session generation: bumped whenever a session is found broken (every lock taken
    /// on it is gone).
    generation: watch::Sender<u64>,
}

struct LockSession {
    connection: PgConnection,
    /// The server process of the session: `pg_locks` names lock holders by it.
    backend_pid: i32,
}

/// A job lock as taken: by which server session, in which session generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldLock {
    pub backend_pid: i32,
    generation: u64,
}

impl JobLocks {
    pub fn new(url: &str) -> JobLocks {
        JobLocks {
            url: url.to_owned(),
            session: Mutex::new(None),
            generation: watch::Sender::new(0),
        }
    }

    /// Takes the job's lock; `None` if another process holds it.
    pub(crate) async fn try_lock(&self, job: &str) -> Result<Option<HeldLock>> {
        let mut guard = self.session.lock().await;
        if guard.is_none() {
            let mut connection = PgConnection::connect(&self.url)
                .await
                .context("opening the job-lock connection")?;
            let (backend_pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
                .fetch_one(&mut connection)
                .await
                .context("opening the job-lock connection")?;
            *guard = Some(LockSession {
                connection,
                backend_pid,
            });
        }
        let session = guard.as_mut().expect("connected above");
        let result: Result<(bool,), sqlx::Error> =
            sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(JOB_LOCK_CLASS)
                .bind(job)
                .fetch_one(&mut session.connection)
                .await;
        match result {
            Ok((locked,)) => Ok(locked.then(|| HeldLock {
                backend_pid: session.backend_pid,
                generation: *self.generation.borrow(),
            })),
            Err(error) => {
                self.session_lost(&mut guard);
                Err(error).context("taking the job lock")
            }
        }
    }

    /// Releases the job's lock — only on the session that took it: on a later session this
    /// process does not hold it (and another process may).
    pub(crate) async fn unlock(&self, job: &str, held: HeldLock) {
        let mut guard = self.session.lock().await;
        if !self.is_current(held) {
            return;
        }
        if let Some(session) = guard.as_mut()
            && sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
                .bind(JOB_LOCK_CLASS)
                .bind(job)
                .execute(&mut session.connection)
                .await
                .is_err()
        {
            self.session_lost(&mut guard);
        }
    }

    /// Whether the session that took `held` is still the live one (it may still have died
    /// since the last probe; [`still_held`] asks the database itself).
    pub(crate) fn is_current(&self, held: HeldLock) -> bool {
        *self.generation.borrow() == held.generation
    }

    /// Resolves once the session that took `held` is found broken (at once if it already was).
    pub(crate) async fn lost(&self, held: HeldLock) {
        let mut generation = self.generation.subscribe();
        // `wait_for` only fails when the sender is gone, and `self` owns it.
        let _ = generation.wait_for(|now| *now != held.generation).await;
    }

    /// Probes the lock session every [`WATCH_INTERVAL`]; a broken one is dropped and announced
    /// (see [`JobLocks::lost`]). Spawned by the store and aborted when it closes.
    pub(crate) async fn watch(self: std::sync::Arc<JobLocks>) {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let mut guard = self.session.lock().await;
            let Some(session) = guard.as_mut() else {
                continue;
            };
            // A connection that went silent (no reset, e.g. a dropped network path) counts as lost
            // too: a probe must not hang while jobs wait for this session.
            let probe = tokio::time::timeout(
                PROBE_TIMEOUT,
                sqlx::query("SELECT 1").execute(&mut session.connection),
            )
            .await;
            let failure = match probe {
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
            };
            tracing::warn!(error = %failure,
                "Lost the job-lock session (database restart?): running windows roll back and re-take their job's lock.");
            self.session_lost(&mut guard);
        }
    }

    fn session_lost(&self, guard: &mut Option<LockSession>) {
        if guard.take().is_some() {
            self.generation.send_modify(|generation| *generation += 1);
        }
    }
}

/// Whether the session that took `held` still holds the job's lock, asked of the database
/// (`pg_locks`). Run it inside a load transaction just before committing: a `false` means the
/// lock was lost meanwhile and another process may be loading the same job.
pub(crate) async fn still_held<'e>(executor: impl PgExecutor<'e>, job: &str, held: HeldLock) -> Result<bool> {
    // An advisory lock on two int4 keys shows as classid = key 1, objid = key 2, objsubid = 2.
    let (held,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
                        WHERE locktype = 'advisory' AND granted AND pid = $3
                          AND classid = $1::oid AND objid = hashtext($2)::oid AND objsubid = 2)",
    )
    .bind(JOB_LOCK_CLASS)
    .bind(job)
    .bind(held.backend_pid)
    .fetch_one(executor)
    .await
    .context("checking that this process still holds the job lock")?;
    Ok(held)
}
