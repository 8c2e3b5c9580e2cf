//! This process's row in `etl.instances`, its liveness, and the sweep that recognises dead
//! processes.
//!
//! A live process holds a session-level advisory lock `(INSTANCE_LOCK_CLASS, lock_key)` on a
//! dedicated connection and beats `etl.instances.heartbeat_at` on that same connection every
//! [`HEARTBEAT_INTERVAL`]. A database restart ends the session and frees the lock although the
//! process lives on, so the lock alone cannot tell "dead" from "disconnected": the keeper
//! ([`Instance::keep_alive`]) re-takes the lock on a fresh connection as soon as the database
//! answers again, and a sweep marks a process dead only when its lock is free *and* its heartbeat
//! is older than [`LIVENESS_GRACE`] — counted from the database's own start at the earliest, so
//! every process gets a full grace period to reconnect after a restart.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Mutex;
use uuid::Uuid;

/// First key of instance advisory locks ("ETL\0").
pub const INSTANCE_LOCK_CLASS: i32 = 0x4554_4c00;

/// How often a live process confirms its lock and beats its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// How long a process may go without a heartbeat (its lock free) before a sweep takes it for
/// dead. Six missed beats: far longer than a reconnect takes once the database answers.
pub(crate) const LIVENESS_GRACE: Duration = Duration::from_secs(30);

/// Longest wait between reconnect attempts while the database is away.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// This process, as the database knows it.
pub struct Instance {
    id: Uuid,
    lock_key: i32,
    url: String,
    /// Holds the liveness lock and beats the heartbeat; never used for anything else, so it is
    /// never returned to a pool. `None` while the database is away.
    lock_connection: Mutex<Option<PgConnection>>,
}

impl Instance {
    /// Inserts this process's row and takes its liveness lock.
    pub async fn register(pool: &PgPool, url: &str, command: &str) -> Result<Arc<Instance>> {
        let id = Uuid::new_v4();
        let lock_key = i32::from_be_bytes(id.as_bytes()[..4].try_into().expect("4 bytes"));
        let hostname = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        sqlx::query(
            "INSERT INTO etl.instances (id, hostname, pid, version, command, lock_key)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(hostname)
        .bind(std::process::id() as i32)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(command)
        .bind(lock_key)
        .execute(pool)
        .await
        .context("registering this process in etl.instances")?;
        let instance = Instance {
            id,
            lock_key,
            url: url.to_owned(),
            lock_connection: Mutex::new(None),
        };
        instance.beat().await.context("taking the instance lock")?;
        Ok(Arc::new(instance))
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Confirms the liveness lock and beats the heartbeat, first (re)connecting and (re)taking
    /// the lock if the session is gone. An error leaves no connection behind, so the next beat
    /// starts afresh.
    pub(crate) async fn beat(&self) -> Result<()> {
        let mut slot = self.lock_connection.lock().await;
        let result = self.beat_on(&mut slot).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }

    async fn beat_on(&self, slot: &mut Option<PgConnection>) -> Result<()> {
        if slot.is_none() {
            let mut connection = PgConnection::connect(&self.url)
                .await
                .context("opening the instance lock connection")?;
            // Not the blocking form: a sweeper probes this lock for an instant, and a beat must
            // never hang behind it (the next beat simply tries again).
            let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
                .bind(INSTANCE_LOCK_CLASS)
                .bind(self.lock_key)
                .fetch_one(&mut connection)
                .await
                .context("taking the instance lock")?;
            anyhow::ensure!(
                taken,
                "the instance lock is held by another session (a sweep probing it)"
            );
            *slot = Some(connection);
        }
        let connection = slot.as_mut().expect("connected above");
        sqlx::query("UPDATE etl.instances SET heartbeat_at = now() WHERE id = $1")
            .bind(self.id)
            .execute(connection)
            .await
            .context("beating the heartbeat")?;
        Ok(())
    }

    /// Beats every [`HEARTBEAT_INTERVAL`] for as long as it runs; after a lost session, retries
    /// with backoff until the database answers and the lock is re-taken. Spawned by the store
    /// and aborted when it closes.
    pub(crate) async fn keep_alive(self: Arc<Instance>) {
        let mut lost = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = if lost { backoff } else { HEARTBEAT_INTERVAL };
            tokio::time::sleep(wait).await;
            // A beat that hangs (a silent connection) must not stop the next ones.
            let beat = match tokio::time::timeout(HEARTBEAT_INTERVAL, self.beat()).await {
                Ok(beat) => beat,
                Err(_) => {
                    self.lock_connection.lock().await.take();
                    Err(anyhow::anyhow!("no answer within {HEARTBEAT_INTERVAL:?}"))
                }
            };
            match beat {
                Ok(()) if lost => {
                    tracing::info!("Database reachable again: re-took this process's liveness lock.");
                    lost = false;
                    backoff = Duration::from_millis(100);
                }
                Ok(()) => {}
                Err(error) if !lost => {
                    tracing::warn!(error = %format!("{error:#}"),
                        "Lost this process's liveness session; re-taking it as soon as the database answers.");
                    lost = true;
                }
                Err(_) => backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF),
            }
        }
    }

    /// Records a clean stop and ends the liveness session.
    pub(crate) async fn mark_stopped(&self, pool: &PgPool) -> Result<()> {
        let marked = sqlx::query("UPDATE etl.instances SET stopped_at = now() WHERE id = $1")
            .bind(self.id)
            .execute(pool)
            .await
            .context("marking this process stopped");
        if let Some(connection) = self.lock_connection.lock().await.take() {
            let _ = connection.close().await;
        }
        marked.map(drop)
    }
}

/// What `reporting-etl runs` shows of a process: where it runs, what it runs, whether it stopped.
#[derive(Debug, Clone)]
pub(crate) struct ProcessInfo {
    pub hostname: String,
    pub pid: i32,
    pub command: String,
    pub running: bool,
}

/// The processes of `ids` that have a row, by id.
pub(crate) async fn describe(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, ProcessInfo>> {
    let rows: Vec<(Uuid, String, i32, String, bool)> = sqlx::query_as(
        "SELECT id, hostname, pid, command, stopped_at IS NULL FROM etl.instances WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .context("reading the processes")?;
    Ok(rows
        .into_iter()
        .map(|(id, hostname, pid, command, running)| {
            (
                id,
                ProcessInfo {
                    hostname,
                    pid,
                    command,
                    running,
                },
            )
        })
        .collect())
}

/// Marks `running` runs of every dead process `interrupted` and the process stopped; returns how
/// many runs it marked. Dead means: its liveness lock is free *and* its heartbeat is older than
/// [`LIVENESS_GRACE`] (counted from the database's start at the earliest). Only processes that
/// run jobs sweep; read-only commands never do.
pub async fn sweep_dead_instances(pool: &PgPool, me: Uuid) -> Result<u64> {
    let grace = LIVENESS_GRACE.as_secs_f64();
    let candidates: Vec<(Uuid, i32, String, i32)> = sqlx::query_as(
        "SELECT id, lock_key, hostname, pid FROM etl.instances
         WHERE id <> $1
           AND (stopped_at IS NULL
                OR id IN (SELECT DISTINCT instance_id FROM etl.runs WHERE status = 'running'))
           AND greatest(heartbeat_at, pg_postmaster_start_time()) < now() - make_interval(secs => $2)",
    )
    .bind(me)
    .bind(grace)
    .fetch_all(pool)
    .await
    .context("listing other processes")?;
    let mut marked = 0;
    let mut connection = pool.acquire().await?;
    for (id, lock_key, hostname, pid) in candidates {
        let (free,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
            .bind(INSTANCE_LOCK_CLASS)
            .bind(lock_key)
            .fetch_one(&mut *connection)
            .await?;
        if !free {
            continue; // alive
        }
        // While we hold its lock the process cannot re-take it, so it cannot beat either: the
        // staleness checked again inside these statements is final.
        let swept: Result<u64> = async {
            let result = sqlx::query(
                "UPDATE etl.runs SET status = 'interrupted', finished_at = now(), error = $2,
                                    error_kind = $4
                 WHERE instance_id = $1 AND status = 'running'
                   AND EXISTS (SELECT 1 FROM etl.instances WHERE id = $1
                       AND greatest(heartbeat_at, pg_postmaster_start_time()) < now() - make_interval(secs => $3))",
            )
            .bind(id)
            .bind(format!(
                "interrupted: the process running it (host {hostname}, pid {pid}) stopped before the run finished; nothing of it was committed"
            ))
            .bind(grace)
            .bind(crate::failure::FailureKind::ProcessDied.as_str())
            .execute(&mut *connection)
            .await?;
            sqlx::query(
                "UPDATE etl.instances SET stopped_at = COALESCE(stopped_at, now())
                 WHERE id = $1 AND greatest(heartbeat_at, pg_postmaster_start_time()) < now() - make_interval(secs => $2)",
            )
            .bind(id)
            .bind(grace)
            .execute(&mut *connection)
            .await?;
            Ok(result.rows_affected())
        }
        .await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(INSTANCE_LOCK_CLASS)
            .bind(lock_key)
            .execute(&mut *connection)
            .await;
        marked += swept?;
        unlocked?;
    }
    Ok(marked)
}
