//! Two releases on one database (a rolling update): what the previous release writes survives
//! this one's schema, a schema newer than the binary is refused with what to do (exit 2), and
//! read-only commands never migrate — they work for a role that may not change the schema and
//! say to run `migrate` when the schema is behind. The whole scenario with a real earlier build
//! is `scripts/upgrade-check`.

use crate::support;

use reporting_etl::store::{self, migrations};
use sqlx::PgPool;
use support::TestDb;

/// A configuration with one Retarus source (client credentials: `auth status` calls it usable
/// without a login) and one job, pointing at a port nothing listens on: the commands here must
/// stop before any upstream call.
fn config(db_url: &str) -> tempfile::NamedTempFile {
    let text = format!(
        r#"
[database]
url = "{db_url}"
pool_size = 2

[sources.retarus]
kind = "retarus"
allow_http = true
token_url = "http://127.0.0.1:9/token"
graphql_url = "http://127.0.0.1:9/graphql"
client_id = "upgrade-test"
client_secret = "upgrade-test-secret"
customer_ids = ["99999"]

[jobs.fax]
source = "retarus"
dataset = "fax_out_udr"
schedule = "0 0 3 * * *"
scope = "all"
"#
    );
    support::load_config(&text).1
}

/// Runs `reporting-etl ARGS --config CONFIG`; returns the exit code and stderr.
fn cli(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let output = support::binary()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The newest version in either ledger.
async fn schema_version(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT max(version) FROM (SELECT version FROM _sqlx_migrations
                                   UNION ALL SELECT version FROM etl.schema_migrations) v",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A database holding migrations up to `last` only, as a release that had just those left it.
async fn database_at(last: i64) -> TestDb {
    let db = TestDb::empty().await;
    let (sqlx_ledger, ours): (Vec<_>, Vec<_>) = store::MIGRATOR
        .iter()
        .filter(|m| m.version <= last)
        .cloned()
        .partition(|m| m.version <= migrations::LAST_SQLX_LEDGER_VERSION);
    sqlx::migrate::Migrator::with_migrations(sqlx_ledger)
        .run(&db.pool)
        .await
        .unwrap();
    if !ours.is_empty() {
        let mut migrator = sqlx::migrate::Migrator::with_migrations(ours);
        migrator.dangerous_set_table_name(migrations::LEDGER);
        migrator.run(&db.pool).await.unwrap();
    }
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_newer_than_the_binary_is_refused_with_exit_2_saying_what_to_do() {
    let db = TestDb::new().await;
    let binary = migrations::binary_version();
    // What a newer release's start-up leaves: one more migration in the ledger.
    let newer = binary + 1;
    sqlx::query(
        "INSERT INTO etl.schema_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, 'from a newer release', true, '\\x00', 1)",
    )
    .bind(newer)
    .execute(&db.pool)
    .await
    .unwrap();
    let file = config(&db.url);
    let expected = format!(
        "the database is at schema {newer}, newer than this binary (≤ {binary}): upgrade the \
         binary, or run the newer one"
    );
    for args in [
        &["run"][..],
        &["run", "--once"],
        &["migrate"],
        &["runs"],
        &["jobs"],
        &["auth", "status"],
    ] {
        let (code, stderr) = cli(file.path(), args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("previously applied"), "{args:?}: {stderr}");
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM etl.instances").await, 0);
    assert_eq!(schema_version(&db.pool).await, newer, "nothing was migrated");

    // The same from a row in sqlx's ledger (a release that recorded there, or a hand-made one).
    sqlx::query("DELETE FROM etl.schema_migrations WHERE version = $1")
        .bind(newer)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, 'from a newer release', true, '\\x00', 1)",
    )
    .bind(newer)
    .execute(&db.pool)
    .await
    .unwrap();
    let (code, stderr) = cli(file.path(), &["run", "--once"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_commands_say_to_migrate_a_schema_behind_the_binary_and_run_migrates_it() {
    // Migration 8 is the last a release before the second ledger knew.
    let db = database_at(migrations::LAST_SQLX_LEDGER_VERSION).await;
    let file = config(&db.url);
    for args in [&["runs"][..], &["jobs"], &["auth", "status"]] {
        let (code, stderr) = cli(file.path(), args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the database is at schema 8, older than this binary (schema {})",
                migrations::binary_version()
            )) && stderr.contains("run `reporting-etl migrate`"),
            "{args:?}: {stderr}"
        );
    }
    let ours: Option<String> = sqlx::query_scalar("SELECT to_regclass('etl.schema_migrations')::text")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(ours, None, "a read-only command migrated");

    let (code, stderr) = cli(file.path(), &["migrate"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(schema_version(&db.pool).await, migrations::binary_version());
    let (code, stderr) = cli(file.path(), &["runs"]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// A login role that may read the `etl` tables and nothing else (no CREATE anywhere), dropped
/// with [`ReadOnlyRole::drop_from`].
struct ReadOnlyRole {
    name: String,
    url: String,
}

impl ReadOnlyRole {
    async fn create(db: &TestDb) -> ReadOnlyRole {
        let name = format!("etl_reader_{}", uuid::Uuid::new_v4().simple());
        for sql in [
            format!("CREATE ROLE {name} LOGIN"),
            // PostgreSQL 15's default; said explicitly so an older server tests the same thing.
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
            format!("GRANT USAGE ON SCHEMA etl TO {name}"),
            format!("GRANT SELECT ON ALL TABLES IN SCHEMA etl TO {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&db.pool)
                .await
                .unwrap();
        }
        let (scheme_user, rest) = db.url.split_once('@').unwrap();
        let (scheme, _) = scheme_user.split_once("://").unwrap();
        let url = format!("{scheme}://{name}@{rest}");
        ReadOnlyRole { name, url }
    }

    async fn drop_from(self, db: &TestDb) {
        for sql in [
            format!("DROP OWNED BY {}", self.name),
            format!("DROP ROLE {}", self.name),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&db.pool)
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_commands_work_for_a_role_that_may_not_create_anything() {
    let db = TestDb::new().await;
    let role = ReadOnlyRole::create(&db).await;
    let file = config(&role.url);
    for args in [&["runs"][..], &["jobs"], &["auth", "status"]] {
        let (code, stderr) = cli(file.path(), args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("permission denied"), "{args:?}: {stderr}");
    }
    role.drop_from(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_role_on_a_schema_behind_the_binary_is_told_to_migrate() {
    // The role may not even read sqlx's ledger (it is in `public`, owned by the migrating role).
    let db = database_at(migrations::LAST_SQLX_LEDGER_VERSION - 1).await;
    let role = ReadOnlyRole::create(&db).await;
    let file = config(&role.url);
    for args in [&["runs"][..], &["jobs"], &["auth", "status"]] {
        let (code, stderr) = cli(file.path(), args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("the database is at schema 8 or older, older than this binary")
                && stderr.contains("run `reporting-etl migrate`"),
            "{args:?}: {stderr}"
        );
    }
    role.drop_from(&db).await;
}

/// The statements a release from before error kinds (migration 8) records a failure and an
/// interruption with: no `error_kind`. On today's schema they must succeed, kind `unknown`.
#[tokio::test]
async fn a_previous_release_recording_failures_without_a_kind_is_not_refused() {
    let db = TestDb::new().await;
    let instance = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO etl.instances (id, hostname, pid, version, command, lock_key)
         VALUES ($1, 'old', 1, '0.1.0', 'run', 1)",
    )
    .bind(instance)
    .execute(&db.pool)
    .await
    .unwrap();
    let insert_running = || async {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO etl.runs (job, source, dataset, scope, window_start, window_end, trigger,
                                   status, instance_id, error, finished_at)
             VALUES ('fax', 'retarus', 'fax_out_udr', '99999', now() - interval '1 hour', now(),
                     'schedule', 'running', $1, NULL, NULL)
             RETURNING id",
        )
        .bind(instance)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    // src/store/runs.rs of that release: the outcome of a window.
    let failed = insert_running().await;
    sqlx::query(
        "UPDATE etl.runs
         SET status = $2, finished_at = clock_timestamp(), rows_written = 0, pages = 0,
             upstream_calls = 1, retries = 0, throttled_ms = 0, warnings = NULL, error = $3,
             data_calls = 0, discovery_calls = 0, token_calls = 1, retry_calls = 0
         WHERE id = $1 AND status = 'running'",
    )
    .bind(failed)
    .bind("failed")
    .bind("upstream unavailable")
    .execute(&db.pool)
    .await
    .expect("the previous release's failed run is recorded");
    // src/service.rs of that release: runs still going at shutdown.
    let interrupted = insert_running().await;
    sqlx::query(
        "UPDATE etl.runs SET status = 'interrupted', finished_at = now(), error = 'shutdown'
         WHERE instance_id = $1 AND status = 'running'",
    )
    .bind(instance)
    .execute(&db.pool)
    .await
    .expect("the previous release's interrupted run is recorded");
    // Its direct insert of a failed run (a window refused before it started).
    sqlx::query(
        "INSERT INTO etl.runs (job, source, dataset, scope, trigger, status, instance_id, error,
                               finished_at)
         VALUES ('fax', 'retarus', 'fax_out_udr', 'all', 'schedule', 'failed', $1, 'config', now())",
    )
    .bind(instance)
    .execute(&db.pool)
    .await
    .expect("the previous release's failed insert is recorded");

    let kinds: Vec<(i64, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, error_kind FROM etl.runs ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(kinds.len(), 3);
    assert_eq!(kinds[0], (failed, "failed".into(), Some("unknown".into())));
    assert_eq!(
        kinds[1],
        (interrupted, "interrupted".into(), Some("unknown".into()))
    );
    assert_eq!(kinds[2].2.as_deref(), Some("unknown"));

    // The constraint still holds for everyone else: a kind on a run that did not fail is refused.
    let wrong = sqlx::query("UPDATE etl.runs SET status = 'succeeded', error_kind = 'timeout' WHERE id = $1")
        .bind(failed)
        .execute(&db.pool)
        .await;
    assert!(wrong.is_err(), "a succeeded run with a kind was accepted");
    // A kind given is kept.
    let kept = insert_running().await;
    sqlx::query("UPDATE etl.runs SET status = 'failed', error_kind = 'timeout' WHERE id = $1")
        .bind(kept)
        .execute(&db.pool)
        .await
        .unwrap();
    let kind: Option<String> = sqlx::query_scalar("SELECT error_kind FROM etl.runs WHERE id = $1")
        .bind(kept)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(kind.as_deref(), Some("timeout"));
}
