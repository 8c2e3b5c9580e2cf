//! This process's row in `etl.instances`, and the sweep that recognises dead processes.
//!
//! A live process holds a session-level advisory lock `(INSTANCE_LOCK_CLASS, lock_key)` on a
//! dedicated connection for as long as it runs. When the process dies, PostgreSQL drops the
//! session and the lock with it, so "can I take that lock?" answers "is that process gone?"
//! exactly, without heartbeats or timeouts.

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// First key of instance advisory locks ("ETL\0").
pub const INSTANCE_LOCK_CLASS: i32 = 0x4554_4c00;

/// This process, as the database knows it.
pub struct Instance {
    id: Uuid,
    /// Holds the liveness lock; never used for anything else, so it is never returned to a pool.
    _lock_connection: PgConnection,
}

impl Instance {
    /// Inserts this process's row and takes its liveness lock.
    pub async fn register(pool: &PgPool, url: &str, command: &str) -> Result<Instance> {
        let id = Uuid::new_v4();
        let lock_key = i32::from_be_bytes(id.as_bytes()[..4].try_into().expect("4 bytes"));
        let mut lock_connection = PgConnection::connect(url)
            .await
            .context("opening the instance lock connection")?;
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(INSTANCE_LOCK_CLASS)
            .bind(lock_key)
            .execute(&mut lock_connection)
            .await
            .context("taking the instance lock")?;
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
        Ok(Instance {
            id,
            _lock_connection: lock_connection,
        })
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Records a clean stop. The lock goes with the connection when `self` drops.
    pub async fn mark_stopped(&self, pool: &PgPool) -> Result<()> {
        sqlx::query("UPDATE etl.instances SET stopped_at = now() WHERE id = $1")
            .bind(self.id)
            .execute(pool)
            .await
            .context("marking this process stopped")?;
        Ok(())
    }
}

/// Marks `running` runs of every dead process `interrupted`; returns how many runs it marked.
pub async fn sweep_dead_instances(pool: &PgPool, me: Uuid) -> Result<u64> {
    let candidates: Vec<(Uuid, i32, String, i32)> = sqlx::query_as(
        "SELECT id, lock_key, hostname, pid FROM etl.instances
         WHERE stopped_at IS NULL AND id <> $1
            OR id IN (SELECT DISTINCT instance_id FROM etl.runs WHERE status = 'running' AND instance_id <> $1)",
    )
    .bind(me)
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
        sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(INSTANCE_LOCK_CLASS)
            .bind(lock_key)
            .execute(&mut *connection)
            .await?;
        let result = sqlx::query(
            "UPDATE etl.runs SET status = 'interrupted', finished_at = now(),
                    error = $2
             WHERE instance_id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(format!(
            "interrupted: the process running it (host {hostname}, pid {pid}) stopped before the run finished; nothing of it was committed"
        ))
        .execute(&mut *connection)
        .await?;
        sqlx::query("UPDATE etl.instances SET stopped_at = COALESCE(stopped_at, now()) WHERE id = $1")
            .bind(id)
            .execute(&mut *connection)
            .await?;
        marked += result.rows_affected();
    }
    Ok(marked)
}
