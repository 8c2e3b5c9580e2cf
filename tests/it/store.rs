//! The store against real PostgreSQL: migrations, run records (status moves once), liveness and
//! dead-process sweeps, and the embedded default server.

use crate::support;

use std::process::Command;

use reporting_etl::config::DatabaseSettings;
use reporting_etl::failure::FailureKind;
use reporting_etl::store::instance;
use reporting_etl::store::instance::INSTANCE_LOCK_CLASS;
use reporting_etl::store::runs::{self, CallBreakdown, Finished, NewRun, RunFigures, RunStatus, Trigger};
use reporting_etl::store::{self, EmbeddedPostgres, Store};
use secrecy::SecretString;
use sqlx::{Connection, PgConnection};
use support::TestDb;

fn settings_for(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: Some(SecretString::from(url.to_owned())),
        pool_size: 3,
        ..Default::default()
    }
}

fn fax_run(window: bool) -> NewRun<'static> {
    use chrono::TimeZone;
    NewRun {
        job: "fax",
        source: "retarus",
        dataset: "fax_out_udr",
        scope: "99999",
        window: window.then(|| {
            (
                chrono::Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
                chrono::Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap(),
            )
        }),
        trigger: Trigger::Once,
    }
}

#[tokio::test]
async fn migrations_apply_to_a_fresh_database_twice() {
    let db = TestDb::empty().await;
    store::migrate(&db.pool).await.unwrap();
    store::migrate(&db.pool).await.unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'etl' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let names: Vec<&str> = tables.iter().map(|(n,)| n.as_str()).collect();
    for expected in [
        "freshness",
        "instances",
        "latest_success",
        "runs",
        "tokens",
        "watermarks",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
}

#[tokio::test]
async fn every_etl_table_and_column_has_a_comment() {
    let db = TestDb::new().await;
    let missing: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname = 'etl' AND c.relkind = 'r' AND col_description(c.oid, a.attnum) IS NULL",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(missing.is_empty(), "columns without COMMENT: {missing:?}");
}

#[tokio::test]
async fn a_run_record_goes_from_running_to_succeeded_with_its_figures() {
    let db = TestDb::new().await;
    let store = Store::open(&settings_for(&db.url), "test").await.unwrap();
    let id = runs::start(store.pool(), store.instance().id(), &fax_run(true))
        .await
        .unwrap();
    assert_eq!(runs::get(store.pool(), id).await.unwrap().status, "running");

    let figures = RunFigures {
        rows_written: 1234,
        pages: 3,
        upstream_calls: 4,
        retries: 1,
        throttled_ms: 250,
        warnings: vec!["field netWorth withheld".into()],
        calls: CallBreakdown {
            data: 1,
            discovery: 1,
            token: 1,
            retry: 1,
        },
    };
    let mut tx = store.pool().begin().await.unwrap();
    runs::finish(
        &mut *tx,
        id,
        RunStatus::Succeeded,
        &figures,
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let run = runs::get(store.pool(), id).await.unwrap();
    assert_eq!(run.status, "succeeded");
    assert_eq!(
        (
            run.rows_written,
            run.pages,
            run.upstream_calls,
            run.retries,
            run.throttled_ms
        ),
        (1234, 3, 4, 1, 250)
    );
    assert_eq!(
        (
            run.data_calls,
            run.discovery_calls,
            run.token_calls,
            run.retry_calls
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(run.warnings.as_deref(), Some("field netWorth withheld"));
    assert!(run.finished_at.unwrap() >= run.started_at);
    let fresh: (String, i64) = sqlx::query_as("SELECT dataset, rows_written FROM etl.latest_success")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fresh, ("fax_out_udr".to_owned(), 1234));
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_run_keeps_its_error_and_shows_in_freshness() {
    let db = TestDb::new().await;
    let store = Store::open(&settings_for(&db.url), "test").await.unwrap();
    let id = runs::start(store.pool(), store.instance().id(), &fax_run(false))
        .await
        .unwrap();
    let figures = RunFigures {
        upstream_calls: 1,
        ..Default::default()
    };
    fail(
        &store,
        id,
        &figures,
        FailureKind::UpstreamRejected,
        "retarus: 403 Forbidden",
    )
    .await;
    let run = runs::get(store.pool(), id).await.unwrap();
    assert_eq!(
        (
            run.status.as_str(),
            run.error.as_deref(),
            run.error_kind.as_deref()
        ),
        (
            "failed",
            Some("retarus: 403 Forbidden"),
            Some("upstream_rejected")
        )
    );
    type Freshness = (
        String,
        Option<String>,
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let (status, error, kind, success): Freshness =
        sqlx::query_as("SELECT last_status, last_error, last_error_kind, last_success_at FROM etl.freshness")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), error.as_deref(), kind.as_deref(), success),
        (
            "failed",
            Some("retarus: 403 Forbidden"),
            Some("upstream_rejected"),
            None
        )
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_final_run_record_is_never_overwritten() {
    let db = TestDb::new().await;
    let store = Store::open(&settings_for(&db.url), "test").await.unwrap();
    let id = runs::start(store.pool(), store.instance().id(), &fax_run(true))
        .await
        .unwrap();
    // Another process marked it interrupted; the late `succeeded` must not replace that.
    sqlx::query("UPDATE etl.runs SET status = 'interrupted', error = 'swept', error_kind = 'process_died' WHERE id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    let figures = RunFigures {
        rows_written: 5,
        ..Default::default()
    };
    let finished = runs::finish(
        store.pool(),
        id,
        RunStatus::Succeeded,
        &figures,
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(finished, Finished::AlreadyFinal("interrupted".into()));
    let run = runs::get(store.pool(), id).await.unwrap();
    assert_eq!(
        (run.status.as_str(), run.error.as_deref(), run.rows_written),
        ("interrupted", Some("swept"), 0)
    );
    // A `running` record moves once.
    let other = runs::start(store.pool(), store.instance().id(), &fax_run(false))
        .await
        .unwrap();
    let finished = fail(&store, other, &figures, FailureKind::Internal, "boom").await;
    assert_eq!(finished, Finished::Recorded);
    let again = runs::finish(
        store.pool(),
        other,
        RunStatus::Succeeded,
        &figures,
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(again, Finished::AlreadyFinal("failed".into()));
    store.close().await.unwrap();
}

/// Ends a running run as `failed` with `kind` and `error`.
async fn fail(store: &Store, id: i64, figures: &RunFigures, kind: FailureKind, error: &str) -> Finished {
    runs::finish(
        store.pool(),
        id,
        RunStatus::Failed,
        figures,
        Some((kind, error)),
        chrono::Utc::now(),
    )
    .await
    .unwrap()
}

/// Migration 0008's constraints: a failed or interrupted run without a kind, a kind on any other
/// status, or a kind outside the list never reaches etl.runs, whoever writes it. A failing run
/// written without a kind (by a release from before kinds, running beside this one) is given the
/// kind `unknown` by migration 0009's trigger rather than refused.
#[tokio::test]
async fn the_database_refuses_a_failing_run_without_a_known_kind() {
    let db = TestDb::new().await;
    let store = Store::open(&settings_for(&db.url), "test").await.unwrap();
    for status in ["failed", "interrupted"] {
        let id = runs::start(store.pool(), store.instance().id(), &fax_run(false))
            .await
            .unwrap();
        sqlx::query("UPDATE etl.runs SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status)
            .execute(store.pool())
            .await
            .unwrap();
        let kind = runs::get(store.pool(), id).await.unwrap().error_kind;
        assert_eq!(kind.as_deref(), Some("unknown"), "{status}");
    }
    let id = runs::start(store.pool(), store.instance().id(), &fax_run(false))
        .await
        .unwrap();
    for (status, kind, constraint) in [
        ("succeeded", Some("quota"), "runs_error_kind_iff_failing"),
        ("skipped", Some("timeout"), "runs_error_kind_iff_failing"),
        ("failed", Some("failed"), "runs_error_kind_known"),
    ] {
        let refused = sqlx::query("UPDATE etl.runs SET status = $2, error_kind = $3 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(kind)
            .execute(store.pool())
            .await
            .expect_err("the database must refuse it");
        let database = refused.as_database_error().expect("a database error");
        assert_eq!(
            database.constraint(),
            Some(constraint),
            "{status} {kind:?}: {refused}"
        );
    }
    for kind in FailureKind::ALL {
        let other = runs::start(store.pool(), store.instance().id(), &fax_run(false))
            .await
            .unwrap();
        let finished = fail(&store, other, &RunFigures::default(), kind, "why").await;
        assert_eq!(finished, Finished::Recorded, "{kind}");
        assert_eq!(
            runs::get(store.pool(), other)
                .await
                .unwrap()
                .error_kind
                .as_deref(),
            Some(kind.as_str())
        );
    }
    store.close().await.unwrap();
}

/// The server process (session) holding the liveness lock with key `lock_key`, if any.
async fn liveness_lock_holder(pool: &sqlx::PgPool, lock_key: i32) -> Option<i32> {
    let row: Option<(i32,)> = sqlx::query_as(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
         AND classid = $1::oid AND objid = $2::oid AND objsubid = 2",
    )
    .bind(INSTANCE_LOCK_CLASS)
    .bind(lock_key)
    .fetch_optional(pool)
    .await
    .unwrap();
    row.map(|(pid,)| pid)
}

#[tokio::test]
async fn a_running_run_of_a_dead_process_is_swept_only_once_its_heartbeat_is_stale() {
    let db = TestDb::new().await;
    // A process that registered, started a run and died: its liveness lock is gone.
    let dead = Store::open(&settings_for(&db.url), "run").await.unwrap();
    let dead_id = dead.instance().id();
    let orphan = runs::start(dead.pool(), dead_id, &fax_run(true)).await.unwrap();
    drop(dead); // the lock connection closes, as when the process is killed

    // A process that is still alive keeps its running run.
    let alive = Store::open(&settings_for(&db.url), "run").await.unwrap();
    let live_run = runs::start(alive.pool(), alive.instance().id(), &fax_run(true))
        .await
        .unwrap();

    let sweeper = Store::open(&settings_for(&db.url), "run").await.unwrap();
    let me = sweeper.instance().id();
    // Lock free but heartbeat fresh: it may be a live process reconnecting after a restart.
    let (dead_key,): (i32,) = sqlx::query_as("SELECT lock_key FROM etl.instances WHERE id = $1")
        .bind(dead_id)
        .fetch_one(sweeper.pool())
        .await
        .unwrap();
    support::wait_until(
        "the dead process's liveness lock to be released",
        std::time::Duration::from_secs(10),
        || async { liveness_lock_holder(sweeper.pool(), dead_key).await.is_none() },
    )
    .await;
    assert_eq!(
        instance::sweep_dead_instances(sweeper.pool(), me).await.unwrap(),
        0,
        "a process whose lock is free but whose heartbeat is fresh is not swept"
    );
    assert_eq!(runs::get(sweeper.pool(), orphan).await.unwrap().status, "running");

    // Its heartbeat older than the grace period: now it is provably gone.
    sqlx::query("UPDATE etl.instances SET heartbeat_at = now() - interval '1 hour' WHERE id = $1")
        .bind(dead_id)
        .execute(sweeper.pool())
        .await
        .unwrap();
    assert_eq!(
        instance::sweep_dead_instances(sweeper.pool(), me).await.unwrap(),
        1
    );
    let orphan = runs::get(sweeper.pool(), orphan).await.unwrap();
    assert_eq!(orphan.status, "interrupted");
    assert_eq!(orphan.error_kind.as_deref(), Some("process_died"));
    assert!(orphan.error.unwrap().contains("stopped before the run finished"));
    assert!(orphan.finished_at.is_some());
    assert_eq!(
        runs::get(sweeper.pool(), live_run).await.unwrap().status,
        "running"
    );
    // A live process with a stale heartbeat but its lock held is not touched either.
    sqlx::query("UPDATE etl.instances SET heartbeat_at = now() - interval '1 hour' WHERE id = $1")
        .bind(alive.instance().id())
        .execute(sweeper.pool())
        .await
        .unwrap();
    assert_eq!(
        instance::sweep_dead_instances(sweeper.pool(), me).await.unwrap(),
        0
    );
    let (stopped,): (Option<chrono::DateTime<chrono::Utc>>,) =
        sqlx::query_as("SELECT stopped_at FROM etl.instances WHERE id = $1")
            .bind(alive.instance().id())
            .fetch_one(sweeper.pool())
            .await
            .unwrap();
    assert_eq!(stopped, None);
    sweeper.close().await.unwrap();
    alive.close().await.unwrap();
}

#[tokio::test]
async fn a_process_whose_liveness_session_ends_retakes_its_lock_and_beats_on() {
    let db = TestDb::new().await;
    let store = Store::open(&settings_for(&db.url), "run").await.unwrap();
    let id = store.instance().id();
    let (lock_key, first_beat): (i32, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT lock_key, heartbeat_at FROM etl.instances WHERE id = $1")
            .bind(id)
            .fetch_one(store.pool())
            .await
            .unwrap();
    // End the session holding the lock, as a database restart would.
    let old_session = liveness_lock_holder(store.pool(), lock_key)
        .await
        .expect("the lock is held");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(old_session)
        .execute(store.pool())
        .await
        .unwrap();
    // Within a few beats: the lock is held by a new session and the heartbeat moved on.
    let beat_now = |pool: sqlx::PgPool| async move {
        let (beat,): (chrono::DateTime<chrono::Utc>,) =
            sqlx::query_as("SELECT heartbeat_at FROM etl.instances WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        beat
    };
    let (new_session, beat) = support::wait_for(
        "the lock re-taken by a new session and a later heartbeat",
        instance::HEARTBEAT_INTERVAL * 3,
        || async {
            let session = liveness_lock_holder(store.pool(), lock_key).await;
            let beat = beat_now(store.pool().clone()).await;
            session
                .filter(|pid| *pid != old_session && beat > first_beat)
                .map(|pid| (pid, beat))
        },
    )
    .await;
    println!("lock re-taken by session {new_session} (was {old_session}); heartbeat {first_beat} → {beat}");
    store.close().await.unwrap();
    // A clean stop ends the liveness session. The server releases the lock when the session's
    // backend exits, a moment after the connection closed: wait for that, not for a time.
    support::wait_for(
        "the liveness lock released after a clean stop",
        std::time::Duration::from_secs(10),
        || async {
            liveness_lock_holder(&db.pool, lock_key)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_live_process_holds_its_liveness_lock() {
    let db = TestDb::new().await;
    let store = Store::open(&settings_for(&db.url), "run").await.unwrap();
    let (lock_key,): (i32,) = sqlx::query_as("SELECT lock_key FROM etl.instances WHERE id = $1")
        .bind(store.instance().id())
        .fetch_one(store.pool())
        .await
        .unwrap();
    let mut other = PgConnection::connect(&db.url).await.unwrap();
    let (free,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
        .bind(INSTANCE_LOCK_CLASS)
        .bind(lock_key)
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(!free, "another session could take a live process's lock");
    store.close().await.unwrap();
}

#[test]
fn the_embedded_default_survives_a_process_restart_and_stops_cleanly() {
    let dir = support::shared_tempdir();
    let data_dir = dir.path().join("pg");
    let env = [("REPORTING_ETL__DATABASE__DATA_DIR", data_dir.to_str().unwrap())];

    // First process: starts the server, creates the schema, stops the server on exit.
    let first = support::binary()
        .arg("migrate")
        .envs(env)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("psql -h 127.0.0.1 -p"), "no psql hint: {stderr}");
    assert!(
        !server_running(&data_dir),
        "the server outlived the process that started it"
    );

    // Second process: same data directory, the data is still there.
    let second = support::binary()
        .arg("runs")
        .envs(env)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(!server_running(&data_dir));

    let mut server = EmbeddedPostgres::start(&data_dir).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (migrations, instances): (i64, i64) = runtime.block_on(async {
        let pool = store::connect(&server.url(), 1).await.unwrap();
        let counts = sqlx::query_as(
            "SELECT (SELECT count(*) FROM _sqlx_migrations) + (SELECT count(*) FROM etl.schema_migrations), \
                    (SELECT count(*) FROM etl.instances)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        counts
    });
    assert_eq!(
        migrations as usize,
        store::MIGRATOR.iter().count(),
        "the schema is kept"
    );
    assert_eq!(instances, 0, "commands that run no jobs register no process");
    server.stop().unwrap();
    assert!(!server_running(&data_dir));
}

fn server_running(data_dir: &std::path::Path) -> bool {
    let pid_file = data_dir.join("cluster").join("postmaster.pid");
    let Ok(contents) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let pid = contents.lines().next().unwrap_or_default().trim().to_owned();
    Command::new("kill")
        .args(["-0", &pid])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
