//! Surviving a database restart, on a private embedded PostgreSQL server the tests stop, start and
//! restart (the shared server is never touched): the service stays alive in the database's eyes
//! (no sweep marks its runs `interrupted`, its instance row never shows `stopped_at`), run status
//! only ever moves once (`running` → final, checked by an audit trigger the test installs), no two
//! processes are ever inside one job's window at once (proved from the timestamped "Entered/Left
//! the job's window." log lines of both processes), and the first fires after the database
//! returns succeed.
//!
//! The outage test stops the database for `DB_OUTAGE_SECONDS` (default 5, to keep `cargo test`
//! short; the figure is 30). The soak restarts the database mid-window under a running
//! service: three times, ten seconds apart, in the test command; every two minutes for
//! `RESTART_SOAK_MINUTES` (default 10) with `scripts/restart-soak.sh`.

use crate::support::{self, PrivateDb, TestDb};

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reporting_etl::store;
use sandbox::faults::FaultPlan;
use sandbox::retarus::RetarusReport;
use sandbox::{Sandbox, SandboxOptions};
use sqlx::PgPool;

/// A migrated database with an audit trigger recording every status change of `etl.runs`.
async fn migrated_with_status_audit(url: &str) -> PgPool {
    let pool = store::connect(url, 2).await.unwrap();
    store::migrate(&pool).await.unwrap();
    for statement in [
        "CREATE TABLE public.status_changes (run_id bigint, old_status text, new_status text,
                                             at timestamptz DEFAULT clock_timestamp())",
        "CREATE FUNCTION public.audit_status() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.status IS DISTINCT FROM OLD.status THEN
                 INSERT INTO public.status_changes (run_id, old_status, new_status)
                 VALUES (OLD.id, OLD.status, NEW.status);
             END IF;
             RETURN NEW;
         END $$",
        "CREATE TRIGGER audit_status AFTER UPDATE ON etl.runs FOR EACH ROW EXECUTE FUNCTION public.audit_status()",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool
}

/// Runs whose status changed more than once, or changed from a final status.
async fn status_flips(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT run_id, string_agg(old_status || '→' || new_status, ', ' ORDER BY at)
         FROM public.status_changes GROUP BY run_id
         HAVING count(*) > 1 OR bool_or(old_status <> 'running')",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A fresh pool once the server answers again.
async fn reconnect(url: &str) -> PgPool {
    support::wait_for(
        "the database to answer again",
        Duration::from_secs(30),
        || async { store::connect(url, 2).await.ok() },
    )
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn job(name: &str, dataset: &str, schedule: &str) -> String {
    format!(
        "\n[jobs.{name}]\nsource = \"retarus\"\ndataset = \"{dataset}\"\nschedule = \"{schedule}\"\nscope = \"all\"\nlookback_minutes = 1\n"
    )
}

/// The service binary with JSON logs going to a file.
struct Service {
    child: tokio::process::Child,
    logs: tempfile::NamedTempFile,
}

impl Service {
    fn start(config: &std::path::Path) -> Service {
        let logs = tempfile::NamedTempFile::new().unwrap();
        let child = tokio::process::Command::from(support::binary())
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(logs.reopen().unwrap())
            .spawn()
            .unwrap();
        Service { child, logs }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path()).unwrap_or_default()
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the service died:\n{}",
            self.log()
        );
    }

    /// Lets the service run for `period` (the scenario's time, not a wait for an event),
    /// checking every half second that it is still alive.
    async fn stays_alive_for(&mut self, period: Duration) {
        let started = Instant::now();
        while let Some(left) = period.checked_sub(started.elapsed()) {
            self.assert_alive();
            tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        }
        self.assert_alive();
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("stops within the grace period")
            .unwrap();
        let log = self.log();
        assert!(status.success(), "{log}");
        log
    }
}

/// A one-shot command of the binary (blocking, so it runs on a blocking thread).
async fn once(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = support::binary();
    command
        .args(args)
        .args(["--log-format", "json", "--config"])
        .arg(config);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// The time spans one process spent inside `job`'s window, from its JSON log lines (a window
/// entered and never left lasts until the end of time).
fn window_spans(log: &str, job: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut entered: HashMap<i64, DateTime<Utc>> = HashMap::new();
    let mut spans = Vec::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["job"].as_str() != Some(job) {
            continue;
        }
        let (Some(at), Some(run)) = (event["timestamp"].as_str(), event["run_id"].as_i64()) else {
            continue;
        };
        let at = DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc);
        match event["message"].as_str() {
            Some("Entered the job's window.") => {
                entered.insert(run, at);
            }
            Some("Left the job's window.") => {
                let start = entered.remove(&run).expect("left a window it never entered");
                spans.push((start, at));
            }
            _ => {}
        }
    }
    spans.extend(
        entered
            .into_values()
            .map(|start| (start, DateTime::<Utc>::MAX_UTC)),
    );
    spans.sort();
    spans
}

/// Pairs of spans of two processes that overlap.
fn overlaps(a: &[(DateTime<Utc>, DateTime<Utc>)], b: &[(DateTime<Utc>, DateTime<Utc>)]) -> Vec<String> {
    let mut found = Vec::new();
    for (a_start, a_end) in a {
        for (b_start, b_end) in b {
            if a_start < b_end && b_start < a_end {
                found.push(format!("{a_start}..{a_end} overlaps {b_start}..{b_end}"));
            }
        }
    }
    found
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or((0,));
    n
}

/// Waits until `sql` counts at least `at_least`, the service staying alive meanwhile.
async fn wait_for(pool: &PgPool, sql: &str, at_least: i64, within: Duration, service: &mut Service) {
    let reached = support::poll_for(within, || {
        service.assert_alive();
        async move { (count(pool, sql).await >= at_least).then_some(()) }
    })
    .await;
    assert!(
        reached.is_some(),
        "`{sql}` did not reach {at_least} within {within:?}:\n{}",
        service.log()
    );
}

/// The service's instance row while it lives.
async fn service_stopped_at(pool: &PgPool) -> Option<DateTime<Utc>> {
    let (stopped,): (Option<DateTime<Utc>>,) =
        sqlx::query_as("SELECT stopped_at FROM etl.instances WHERE command = 'run'")
            .fetch_one(pool)
            .await
            .unwrap();
    stopped
}

/// Rows of `table` against the sandbox's records, per customer over the span its succeeded runs
/// of `job` covered (each customer is a scope with its own watermark).
async fn rows_against_sandbox(
    pool: &PgPool,
    sandbox: &Sandbox,
    job: &str,
    report: RetarusReport,
    table: &str,
) -> (i64, usize) {
    let mut expected = 0;
    for customer in &sandbox.retarus.customer_ids {
        if let Some((first, last)) = crate::soak::span(pool, job, customer).await {
            expected += sandbox.retarus.records(report, customer, first, last).len();
        }
    }
    let rows = count(pool, &format!("SELECT count(*) FROM {table}")).await;
    (rows, expected)
}

/// A private database (with the status audit), slow sandbox answers, and the service running job
/// `fax` (every 2 s, one window per customer) plus `more_jobs`.
struct Scene {
    db: PrivateDb,
    sandbox: Sandbox,
    config: tempfile::NamedTempFile,
    service: Service,
}

/// A [`Scene`] whose sandbox answers after `latency`, the service just started.
async fn scene(latency: Duration, more_jobs: &str) -> Scene {
    let db = PrivateDb::start().await;
    migrated_with_status_audit(&db.url).await.close().await;
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sandbox.retarus.faults.set(FaultPlan {
        latency,
        ..Default::default()
    });
    let extra = format!(
        "{}{more_jobs}\n[server]\nlisten = \"127.0.0.1:{}\"\nshutdown_grace_secs = 10\n",
        job("fax", "fax_out_udr", "*/2 * * * * *"),
        free_port()
    );
    let (_, config) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    let service = Service::start(config.path());
    Scene {
        db,
        sandbox,
        config,
        service,
    }
}

/// A [`Scene`] with slow answers (every window in flight for a while), once a `fax` window has
/// loaded and another is in flight.
async fn service_mid_fax_window(more_jobs: &str) -> Scene {
    // Calls slow enough (1.5 s) that a restart right after a window is seen running lands inside
    // it on a loaded machine too.
    let mut scene = scene(Duration::from_millis(1500), more_jobs).await;
    let pool = reconnect(&scene.db.url).await;
    for (status, within) in [("succeeded", 60), ("running", 30)] {
        let sql = format!("SELECT count(*) FROM etl.runs WHERE job = 'fax' AND status = '{status}'");
        wait_for(&pool, &sql, 1, Duration::from_secs(within), &mut scene.service).await;
    }
    pool.close().await;
    // A run just recorded as running may not have started its window yet (the restart once
    // landed in those few milliseconds): its first call reaching the sandbox, answered 1.5 s
    // later, is what puts the window in flight.
    let calls = scene.sandbox.retarus.graphql_calls();
    let retarus = &scene.sandbox.retarus;
    support::wait_until(
        "the running fax window's first call",
        Duration::from_secs(30),
        || async { retarus.graphql_calls() > calls },
    )
    .await;
    scene
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fast_restart_mid_run_never_lets_two_processes_into_one_jobs_window() {
    let Scene {
        mut db,
        sandbox: _sandbox,
        config,
        mut service,
    } = service_mid_fax_window("").await;

    // Mid-window: restart, then a second process asks for the same job at once.
    let restarted_at = Utc::now();
    db.restart_fast().await;
    let second = once(config.path(), &["run", "--once", "--job", "fax"]).await;
    let second_log = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(
        second.status.success(),
        "{}{second_log}",
        String::from_utf8_lossy(&second.stdout)
    );

    // The service goes on: a window of it loads after the second process is done.
    let pool = reconnect(&db.url).await;
    let done_at = Utc::now();
    let sql = format!(
        "SELECT count(*) FROM etl.runs r JOIN etl.instances i ON i.id = r.instance_id
         WHERE i.command = 'run' AND r.status = 'succeeded' AND r.started_at > '{done_at}'"
    );
    wait_for(&pool, &sql, 1, Duration::from_secs(60), &mut service).await;
    assert_eq!(
        service_stopped_at(&pool).await,
        None,
        "the live service was declared dead"
    );
    let service_log = service.stop().await;

    let service_spans = window_spans(&service_log, "fax");
    let second_spans = window_spans(&second_log, "fax");
    let overlapping = overlaps(&service_spans, &second_spans);
    let cut = service_spans
        .iter()
        .find(|(start, end)| *start < restarted_at && *end > restarted_at);
    let skipped = second_log.contains("Run skipped.");
    println!(
        "restart at {restarted_at}: service window cut {cut:?}; second process {} with {} window(s): {second_spans:?}",
        if skipped { "skipped" } else { "ran" },
        second_spans.len()
    );
    assert!(cut.is_some(), "the restart hit no window: {service_spans:?}");
    assert!(
        skipped || !second_spans.is_empty(),
        "the second process neither skipped nor ran:\n{second_log}"
    );
    assert!(
        overlapping.is_empty(),
        "two processes inside the job's window at once: {overlapping:?}"
    );
    assert_eq!(status_flips(&pool).await, Vec::<(i64, String)>::new());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM etl.runs WHERE status = 'running'").await,
        0
    );
    pool.close().await;
    db.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_an_outage_mid_run_nothing_declares_the_live_service_dead_and_its_next_fires_succeed() {
    let outage = Duration::from_secs(support::knob("DB_OUTAGE_SECONDS", 5));
    // `sms` is only for the second process: its schedule is once a year.
    let Scene {
        mut db,
        sandbox,
        config,
        mut service,
    } = service_mid_fax_window(&job("sms", "sms_out_udr", "0 0 0 1 1 *")).await;

    db.stop().await;
    service.stays_alive_for(outage).await;
    db.start_again().await;
    let restarted = Utc::now();
    sandbox.retarus.faults.clear();

    // Other processes start at once: a read-only one and a run of another job.
    let runs = once(config.path(), &["runs"]).await;
    assert!(runs.status.success(), "{}", String::from_utf8_lossy(&runs.stderr));
    let sms = once(config.path(), &["run", "--once", "--job", "sms"]).await;
    assert!(
        sms.status.success(),
        "{}{}",
        String::from_utf8_lossy(&sms.stdout),
        String::from_utf8_lossy(&sms.stderr)
    );

    let pool = reconnect(&db.url).await;
    let sql = format!(
        "SELECT count(*) FROM etl.runs WHERE job = 'fax' AND status = 'succeeded' AND started_at > '{restarted}'"
    );
    wait_for(&pool, &sql, 2, Duration::from_secs(60), &mut service).await;
    assert_eq!(
        service_stopped_at(&pool).await,
        None,
        "the live service was declared dead"
    );
    let declared_dead = count(
        &pool,
        "SELECT count(*) FROM etl.runs WHERE status = 'interrupted' AND error LIKE '%process running it%'",
    )
    .await;
    let could_not_start = count(
        &pool,
        "SELECT count(*) FROM etl.runs WHERE error LIKE '%could not start%' OR error LIKE '%taking the job lock%'",
    )
    .await;
    // The first fax window run that started after the database returned.
    let (first_after,): (String,) = sqlx::query_as(
        "SELECT status FROM etl.runs WHERE job = 'fax' AND window_start IS NOT NULL AND started_at > $1
         ORDER BY id LIMIT 1",
    )
    .bind(restarted)
    .fetch_one(&pool)
    .await
    .unwrap();
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM etl.runs GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let log = service.stop().await;
    println!(
        "outage of {} s: runs by status {by_status:?}; live runs declared dead {declared_dead}; \
         `could not start` {could_not_start}; first fax window after: {first_after}",
        outage.as_secs()
    );
    assert_eq!(declared_dead, 0, "{log}");
    assert_eq!(could_not_start, 0, "{log}");
    assert_eq!(first_after, "succeeded", "{log}");
    assert_eq!(status_flips(&pool).await, Vec::<(i64, String)>::new(), "{log}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM etl.runs WHERE status = 'running'").await,
        0
    );
    let (rows, expected) = rows_against_sandbox(
        &pool,
        &sandbox,
        "fax",
        RetarusReport::FaxOut,
        "retarus.fax_out_udr",
    )
    .await;
    assert_eq!(rows as usize, expected);
    pool.close().await;
    db.stop().await;
}

#[tokio::test]
async fn a_read_only_command_changes_no_records_of_other_processes() {
    let db = TestDb::new().await;
    // A process gone long ago (lock free, heartbeat an hour old) left a run `running`.
    let instance = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO etl.instances (id, hostname, pid, version, command, lock_key, heartbeat_at)
         VALUES ($1, 'elsewhere', 1, '0', 'run', 7, now() - interval '1 hour')",
    )
    .bind(instance)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO etl.runs (job, source, dataset, scope, trigger, status, instance_id)
         VALUES ('fax', 'retarus', 'fax_out_udr', 'all', 'schedule', 'running', $1)",
    )
    .bind(instance)
    .execute(&db.pool)
    .await
    .unwrap();
    let config = support::load_config(&format!("[database]\nurl = \"{}\"\n", db.url)).1;
    for args in [vec!["runs"], vec!["jobs"], vec!["auth", "status"]] {
        let output = support::binary()
            .args(&args)
            .arg("--config")
            .arg(config.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let (status,): (String,) = sqlx::query_as("SELECT status FROM etl.runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        status, "running",
        "a read-only command swept another process's run"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM etl.instances").await, 1);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM etl.instances WHERE stopped_at IS NOT NULL"
        )
        .await,
        0
    );
}

/// Restarts the database `restarts` times, `every` apart, each time while a window is in flight,
/// under a service running two jobs; then checks that the service was never declared dead, that
/// no run is left `running` or changed status twice, and that no row was lost or duplicated.
async fn restart_soak(restarts: u32, every: Duration) {
    let Scene {
        mut db,
        sandbox,
        config: _config,
        mut service,
    } = scene(
        Duration::from_millis(500),
        &job("sms", "sms_out_udr", "*/3 * * * * *"),
    )
    .await;
    let running_sql = "SELECT count(*) FROM etl.runs WHERE status = 'running'";
    let began = Instant::now();
    let mut last_restart = Utc::now();
    for round in 1..=restarts {
        service.stays_alive_for(every).await;
        // Restart while a window is in flight (one started since the last restart: windows open
        // as data falls due, and with fires every 2 and 3 s and slow answers one is in flight
        // within seconds).
        let pool = reconnect(&db.url).await;
        let in_flight = format!("{running_sql} AND started_at > '{last_restart}'");
        wait_for(&pool, &in_flight, 1, Duration::from_secs(60), &mut service).await;
        pool.close().await;
        last_restart = Utc::now();
        db.restart_fast().await;
        let pool = reconnect(&db.url).await;
        assert_eq!(
            service_stopped_at(&pool).await,
            None,
            "the live service was declared dead after restart {round}"
        );
        pool.close().await;
    }
    // The service works again after the last restart: each job loads a window.
    let pool = reconnect(&db.url).await;
    for job in ["fax", "sms"] {
        let sql = format!(
            "SELECT count(*) FROM etl.runs WHERE job = '{job}' AND status = 'succeeded' AND started_at > '{last_restart}'"
        );
        wait_for(&pool, &sql, 1, Duration::from_secs(60), &mut service).await;
    }
    pool.close().await;
    let log = service.stop().await;
    let pool = reconnect(&db.url).await;
    let by_status: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT job, status, count(*) FROM etl.runs GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    let flips = status_flips(&pool).await;
    let running = count(&pool, running_sql).await;
    let fax = rows_against_sandbox(
        &pool,
        &sandbox,
        "fax",
        RetarusReport::FaxOut,
        "retarus.fax_out_udr",
    )
    .await;
    let sms = rows_against_sandbox(
        &pool,
        &sandbox,
        "sms",
        RetarusReport::SmsOut,
        "retarus.sms_out_udr",
    )
    .await;
    println!(
        "{restarts} restarts every {every:?} mid-window, {:.0?} in all: runs {by_status:?}; left running {running}; \
         status flips {}; fax rows {} of {} expected; sms rows {} of {} expected",
        began.elapsed(),
        flips.len(),
        fax.0,
        fax.1,
        sms.0,
        sms.1
    );
    assert_eq!(running, 0, "no run left running after a clean stop:\n{log}");
    assert_eq!(
        flips,
        Vec::<(i64, String)>::new(),
        "runs whose status changed more than once"
    );
    assert_eq!(
        fax.0 as usize, fax.1,
        "fax rows against the sandbox's records (lost or duplicated)"
    );
    assert_eq!(
        sms.0 as usize, sms.1,
        "sms rows against the sandbox's records (lost or duplicated)"
    );
    pool.close().await;
    db.stop().await;
}

/// The short form of the soak below, in the test command: three restarts ten seconds apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_database_restarts_mid_window_lose_nothing_and_never_declare_the_service_dead() {
    restart_soak(3, Duration::from_secs(10)).await;
}

/// The long form: `RESTART_SOAK_MINUTES` (default 10) with a restart every two minutes
/// (`scripts/restart-soak.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "takes RESTART_SOAK_MINUTES (default 10) minutes: run scripts/restart-soak.sh"]
async fn soak_with_a_database_restart_every_two_minutes() {
    let minutes: u32 = support::knob("RESTART_SOAK_MINUTES", 10);
    assert!(
        minutes >= 2,
        "RESTART_SOAK_MINUTES={minutes}: must be at least 2 (one restart every two minutes)"
    );
    restart_soak(minutes / 2, Duration::from_secs(120)).await;
}
