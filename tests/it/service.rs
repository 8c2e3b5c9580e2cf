//! The service as ops run it: the real binary as a subprocess against the sandbox and
//! PostgreSQL — scheduled runs, no overlaps, two replicas, SIGTERM, `--once` backfills and
//! `/metrics`.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use sandbox::{Sandbox, SandboxOptions};
use support::TestDb;

/// Writes `text` to a config file the subprocess reads.
fn config_file(text: &str) -> tempfile::NamedTempFile {
    support::load_config(text).1
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const EVERY_TWO_SECONDS: &str = "*/2 * * * * *";

fn fax_job(schedule: &str) -> String {
    format!(
        "\n[jobs.fax]\nsource = \"retarus\"\ndataset = \"fax_out_udr\"\nschedule = \"{schedule}\"\nscope = \"all\"\nlookback_minutes = 0\n"
    )
}

fn server_section(port: u16) -> String {
    format!("\n[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 10\n")
}

async fn runs_by_status(db: &TestDb, job: &str) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT status, count(*) FROM etl.runs WHERE job = $1 GROUP BY 1 ORDER BY 1")
        .bind(job)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn succeeded_runs(db: &TestDb) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM etl.runs WHERE status = 'succeeded'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    count
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running") as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}

/// `reporting-etl run` as a subprocess, its log in a file (an unread pipe could fill up and
/// block the service).
struct Service {
    child: tokio::process::Child,
    log: tempfile::NamedTempFile,
}

impl Service {
    fn start(config: &std::path::Path) -> Service {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = tokio::process::Command::from(support::binary())
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Service { child, log }
    }

    /// SIGTERM; the service must exit 0 within its grace period. Returns its log.
    async fn stop(mut self) -> String {
        sigterm(&self.child);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits within the grace period")
            .unwrap();
        let log = std::fs::read_to_string(self.log.path()).unwrap();
        assert!(status.success(), "{log}");
        log
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_service_runs_its_job_repeatedly_and_stops_cleanly_on_sigterm() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let port = free_port();
    // Windows end on whole minutes, so with no lookback a fire finds new data due only once a
    // minute; a minute of lookback gives every fire a window to load (again).
    let job = fax_job(EVERY_TWO_SECONDS).replace("lookback_minutes = 0", "lookback_minutes = 1");
    let extra = format!("{job}{}", server_section(port));
    let file = config_file(&support::sandbox_config(&sandbox, &db.url, &extra));
    let service = Service::start(file.path());
    // Three fires of the two-customer job: six succeeded run records.
    support::wait_until("three scheduled fires", Duration::from_secs(60), || async {
        support::count_runs(&db.pool, "fax", "succeeded").await >= 6
    })
    .await;

    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // Runs that succeeded before and after the scrape bracket what /metrics counted.
    let succeeded_before = succeeded_runs(&db).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let succeeded_after = succeeded_runs(&db).await;

    let stderr = service.stop().await;

    let runs = runs_by_status(&db, "fax").await;
    let succeeded = runs.iter().find(|(s, _)| s == "succeeded").map_or(0, |(_, n)| *n);
    assert!(
        succeeded >= 6,
        "expected three scheduled fires of two scopes: {runs:?}\n{stderr}"
    );
    assert!(runs.iter().all(|(s, _)| s != "running"), "{runs:?}");
    // Every record the sandbox has for the loaded span is in the table exactly once.
    let expected = support::expected_fax_rows(&sandbox, &db.pool).await;
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM retarus.fax_out_udr")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, expected);
    // /metrics parses as Prometheus text and counts the runs it had seen.
    let runs_line = metrics
        .lines()
        .find(|l| l.starts_with("reporting_etl_runs_total") && l.contains("outcome=\"succeeded\""))
        .unwrap_or_else(|| panic!("no run counter in:\n{metrics}"));
    let counted: f64 = runs_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (succeeded_before as f64..=succeeded_after as f64).contains(&counted),
        "/metrics counted {counted} succeeded runs; the run records say {succeeded_before}..={succeeded_after}"
    );
    for line in metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not Prometheus text: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_service_processes_on_one_database_load_each_window_once() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let mut services = Vec::new();
    let mut files = Vec::new();
    for _ in 0..2 {
        let extra = format!("{}{}", fax_job(EVERY_TWO_SECONDS), server_section(free_port()));
        let file = config_file(&support::sandbox_config(&sandbox, &db.url, &extra));
        services.push(Service::start(file.path()));
        files.push(file);
    }
    // Two fires' worth of windows, whichever replica loaded them.
    support::wait_until("two scheduled fires", Duration::from_secs(60), || async {
        support::count_runs(&db.pool, "fax", "succeeded").await >= 4
    })
    .await;
    for service in services {
        service.stop().await;
    }
    // The same window is never loaded twice: succeeded runs have distinct windows per scope.
    let duplicates: Vec<(String, chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "SELECT scope, window_start, count(*) FROM etl.runs
         WHERE job = 'fax' AND status = 'succeeded'
         GROUP BY 1, 2 HAVING count(*) > 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(duplicates.is_empty(), "windows loaded twice: {duplicates:?}");
    let runs = runs_by_status(&db, "fax").await;
    assert!(runs.iter().any(|(s, n)| s == "succeeded" && *n >= 4), "{runs:?}");
    // Whether the replicas' fires overlap (one skips) or follow each other (the second finds the
    // watermark moved) depends on timing; either way no window may be loaded twice (above).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfill_killed_half_way_resumes_and_ends_identical_to_an_uninterrupted_one() {
    let sandbox = Sandbox::start(SandboxOptions {
        records_per_day: 40,
        ..Default::default()
    })
    .await
    .unwrap();
    let today = chrono::Utc::now().date_naive();
    let from = (today - chrono::Duration::days(200)).to_string();
    let to = today.to_string();

    // Uninterrupted reference run.
    let reference = TestDb::new().await;
    let file = config_file(&support::sandbox_config(
        &sandbox,
        &reference.url,
        &fax_job("0 0 0 * * *"),
    ));
    let output = support::binary()
        .args([
            "run", "--once", "--job", "fax", "--from", &from, "--to", &to, "--config",
        ])
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("window(s)") && stdout.contains("succeeded"),
        "no summary: {stdout}"
    );

    // Killed run, then resumed.
    let db = TestDb::new().await;
    let file = config_file(&support::sandbox_config(
        &sandbox,
        &db.url,
        &fax_job("0 0 0 * * *"),
    ));
    sandbox.retarus.faults.set(sandbox::faults::FaultPlan {
        latency: Duration::from_millis(150),
        ..Default::default()
    });
    let mut child = support::backfill_command(file.path(), "fax", &from, &to)
        .spawn()
        .unwrap();
    // Once a window is in, every later answer hangs: the window the kill cuts short is certainly
    // mid-flight (its run recorded `running`), not between two windows.
    support::wait_until("a first backfilled window", Duration::from_secs(60), || async {
        support::count_runs(&db.pool, "fax", "succeeded").await >= 1
    })
    .await;
    sandbox.retarus.faults.set(sandbox::faults::FaultPlan {
        latency: Duration::from_secs(3600),
        ..Default::default()
    });
    let calls = sandbox.retarus.graphql_calls();
    support::wait_until(
        "a call of the next window to hang",
        Duration::from_secs(60),
        || {
            let called = sandbox.retarus.graphql_calls() > calls;
            async move { called }
        },
    )
    .await;
    support::wait_until(
        "the hanging window to be recorded running",
        Duration::from_secs(30),
        || async { support::count_runs(&db.pool, "fax", "running").await == 1 },
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    sandbox.retarus.faults.clear();
    let (partial,): (i64,) = sqlx::query_as("SELECT count(*) FROM retarus.fax_out_udr")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    let resumed = support::binary()
        .args([
            "run", "--once", "--job", "fax", "--from", &from, "--to", &to, "--config",
        ])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let table = |pool: sqlx::PgPool| async move {
        // Every column but the load bookkeeping (_run_id, _loaded_at) differs in no row.
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT md5((to_jsonb(t) - '_run_id' - '_loaded_at')::text) FROM retarus.fax_out_udr t ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.into_iter().map(|(hash,)| hash).collect::<Vec<_>>()
    };
    let expected = table(reference.pool.clone()).await;
    let got = table(db.pool.clone()).await;
    println!(
        "backfill: {} rows in total, {} present when killed",
        expected.len(),
        partial
    );
    assert!(!expected.is_empty());
    assert_eq!(
        got, expected,
        "the resumed backfill differs from the uninterrupted one"
    );
    // The killed process left its one window unfinished: still `running` (the resumed run
    // started within the 30 s liveness grace, so it may not sweep it yet) or `interrupted` (if it
    // did); whichever, that window was loaded again by the resumed run. A backfill's windows
    // are cut relative to the vendor's history limit, so when the clock passes a minute between
    // the two runs the resumed run's windows are shifted by it: "that window" is the one
    // succeeded window of the scope holding the cut window's midpoint.
    let unfinished: Vec<(String, chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "SELECT status, window_start,
                (SELECT count(*) FROM etl.runs s WHERE s.status = 'succeeded' AND s.scope = r.scope
                    AND s.window_start <= r.window_start + (r.window_end - r.window_start) / 2
                    AND s.window_end > r.window_start + (r.window_end - r.window_start) / 2)
         FROM etl.runs r WHERE status IN ('running', 'interrupted')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        unfinished.len() == 1 && unfinished[0].2 == 1,
        "exactly one window (the one the kill cut short) unfinished, and loaded once by the resumed run: \
         {unfinished:?} (status, window start, succeeded runs of that scope and window)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_slow_extraction_rolls_the_window_back_and_the_next_once_completes_it() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let port = free_port();
    let extra = format!(
        "{}\n[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 1\n",
        fax_job(EVERY_TWO_SECONDS)
    );
    let file = config_file(&support::sandbox_config(&sandbox, &db.url, &extra));
    // Every upstream answer takes 4 s: the first window is still loading when SIGTERM arrives.
    sandbox.retarus.faults.set(sandbox::faults::FaultPlan {
        latency: Duration::from_secs(4),
        ..Default::default()
    });
    let mut child = tokio::process::Command::from(support::binary())
        .args(["run", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first window to start (the service creates the schema first: a query may
    // fail until then).
    support::wait_until("the first window to start", Duration::from_secs(60), || async {
        let running: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM etl.runs WHERE status = 'running'")
                .fetch_one(&db.pool)
                .await;
        running.is_ok_and(|running| running > 0)
    })
    .await;
    let signalled = std::time::Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    let stopped_after = signalled.elapsed();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stopped_after < Duration::from_secs(4),
        "took {stopped_after:?} for a 1 s grace period"
    );
    let runs = runs_by_status(&db, "fax").await;
    assert!(runs.iter().any(|(s, _)| s == "interrupted"), "{runs:?}\n{stderr}");
    assert!(
        runs.iter().all(|(s, _)| s != "running" && s != "succeeded"),
        "{runs:?}"
    );
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM retarus.fax_out_udr")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "no partial window is visible");

    sandbox.retarus.faults.clear();
    let once = support::binary()
        .args(["run", "--once", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    let expected = support::expected_fax_rows(&sandbox, &db.pool).await;
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM retarus.fax_out_udr")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, expected);
    let jobs = support::binary()
        .args(["jobs", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    let jobs = String::from_utf8_lossy(&jobs.stdout);
    assert!(
        jobs.contains("succeeded at"),
        "jobs shows the last outcome:\n{jobs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_still_running_at_its_next_fire_is_skipped_not_doubled() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let extra = format!("{}{}", fax_job(EVERY_TWO_SECONDS), server_section(free_port()));
    let file = config_file(&support::sandbox_config(&sandbox, &db.url, &extra));
    // Each answer takes 2.5 s and a run makes at least two calls: every run spans several fires.
    sandbox.retarus.faults.set(sandbox::faults::FaultPlan {
        latency: Duration::from_millis(2500),
        ..Default::default()
    });
    let service = Service::start(file.path());
    support::wait_until(
        "a fire during a run to be skipped",
        Duration::from_secs(60),
        || async { support::count_runs(&db.pool, "fax", "skipped").await >= 1 },
    )
    .await;
    service.stop().await;
    let runs = runs_by_status(&db, "fax").await;
    let skipped = runs.iter().find(|(s, _)| s == "skipped").map_or(0, |(_, n)| *n);
    assert!(skipped >= 1, "{runs:?}");
    // Never two windows of the job in flight at once: no two runs of it overlap in time.
    let (overlaps,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM etl.runs a JOIN etl.runs b ON a.id < b.id
         WHERE a.job = 'fax' AND b.job = 'fax' AND a.status <> 'skipped' AND b.status <> 'skipped'
           AND b.started_at < coalesce(a.finished_at, now())",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(overlaps, 0, "runs of one job overlapped: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fire_while_another_process_holds_the_job_lock_is_recorded_skipped_and_loads_nothing() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    // The test plays the other replica: it holds the job's advisory lock, exactly as a process
    // running `fax` would, on a session of its own.
    let mut other_replica = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext('fax'))")
        .bind(reporting_etl::store::locks::JOB_LOCK_CLASS)
        .fetch_one(&mut other_replica)
        .await
        .unwrap();
    assert!(locked);
    let extra = format!("{}{}", fax_job(EVERY_TWO_SECONDS), server_section(free_port()));
    let file = config_file(&support::sandbox_config(&sandbox, &db.url, &extra));
    let service = Service::start(file.path());
    support::wait_until("two fires to be skipped", Duration::from_secs(60), || async {
        support::count_runs(&db.pool, "fax", "skipped").await >= 2
    })
    .await;
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM retarus.fax_out_udr")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a skipped fire loaded rows");
    let runs = runs_by_status(&db, "fax").await;
    assert_eq!(
        runs.len(),
        1,
        "only skipped runs while the lock is held: {runs:?}"
    );
    let reasons: Vec<(String, String)> =
        sqlx::query_as("SELECT trigger, error FROM etl.runs WHERE job = 'fax' AND status = 'skipped'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        reasons
            .iter()
            .all(|(trigger, reason)| trigger == "schedule" && reason == "another process is running this job"),
        "{reasons:?}"
    );

    // The other replica finishes: the next fire runs.
    sqlx::Connection::close(other_replica).await.unwrap();
    support::wait_until(
        "a fire after the lock is released to load",
        Duration::from_secs(60),
        || async { support::count_runs(&db.pool, "fax", "succeeded").await >= 2 },
    )
    .await;
    service.stop().await;
}

async fn readyz(port: u16) -> (u16, String) {
    let answer = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_answers_503_naming_a_source_that_needs_reauthorisation_until_it_is_reauthorised() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let grant = sandbox.roubler.grant_tokens();
    support::seed_refresh_chain(&db.pool, "roubler", &grant, grant.expires_in as f64).await;
    let port = free_port();
    let extra = format!(
        "\n[jobs.locations]\nsource = \"roubler\"\ndataset = \"locations\"\nschedule = \"{EVERY_TWO_SECONDS}\"\n{}",
        server_section(port)
    );
    let file = config_file(&support::sandbox_config(&sandbox, &db.url, &extra));
    let service = Service::start(file.path());
    support::wait_until(
        "a first run of the Roubler job",
        Duration::from_secs(60),
        || async { support::count_runs(&db.pool, "locations", "succeeded").await >= 1 },
    )
    .await;
    assert_eq!(readyz(port).await.0, 200);

    // The vendor revokes the authorisation: the next refresh is refused for good.
    sandbox.roubler.revoke_all();
    sandbox.roubler.expire_access_tokens();
    let (status, body) = support::wait_for("/readyz to say not ready", Duration::from_secs(60), || async {
        let answer = readyz(port).await;
        (answer.0 != 200).then_some(answer)
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("re-authorise roubler with `reporting-etl auth login`"),
        "{body}"
    );
    // The run that met the refusal records why (the token's status is written before the run
    // record is finished, so /readyz may say it first).
    support::wait_until("the failed run's record", Duration::from_secs(30), || async {
        let failed: Vec<String> =
            sqlx::query_scalar("SELECT error FROM etl.runs WHERE job = 'locations' AND status = 'failed'")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        failed
            .iter()
            .any(|error| error.contains("re-authorise with `reporting-etl auth login roubler`"))
    })
    .await;

    // A person re-authorises (as `auth login` stores it): ready again, and the job loads again.
    sqlx::query("DELETE FROM etl.tokens WHERE source = 'roubler'")
        .execute(&db.pool)
        .await
        .unwrap();
    let grant = sandbox.roubler.grant_tokens();
    support::seed_refresh_chain(&db.pool, "roubler", &grant, grant.expires_in as f64).await;
    let succeeded = support::count_runs(&db.pool, "locations", "succeeded").await;
    support::wait_until("/readyz to say ready again", Duration::from_secs(60), || async {
        readyz(port).await.0 == 200
    })
    .await;
    support::wait_until(
        "a run after re-authorisation",
        Duration::from_secs(60),
        || async { support::count_runs(&db.pool, "locations", "succeeded").await > succeeded },
    )
    .await;
    let stderr = service.stop().await;
    for secret in [&grant.access_token, &sandbox.roubler.client_secret] {
        assert!(!stderr.contains(secret.as_str()), "a secret appeared in the logs");
    }
}
