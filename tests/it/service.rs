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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_service_runs_its_job_repeatedly_and_stops_cleanly_on_sigterm() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let port = free_port();
    let extra = format!("{}{}", fax_job(EVERY_TWO_SECONDS), server_section(port));
    let file = config_file(&support::sandbox_config(&sandbox, &db.url, &extra));
    let mut child = tokio::process::Command::from(support::binary())
        .args(["run", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;

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

    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");

    let runs = runs_by_status(&db, "fax").await;
    let succeeded = runs.iter().find(|(s, _)| s == "succeeded").map_or(0, |(_, n)| *n);
    assert!(
        succeeded >= 3,
        "expected several scheduled runs: {runs:?}\n{stderr}"
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
    let mut children = Vec::new();
    let mut files = Vec::new();
    for _ in 0..2 {
        let extra = format!("{}{}", fax_job(EVERY_TWO_SECONDS), server_section(free_port()));
        let file = config_file(&support::sandbox_config(&sandbox, &db.url, &extra));
        children.push(
            tokio::process::Command::from(support::binary())
                .args(["run", "--config"])
                .arg(file.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        files.push(file);
    }
    tokio::time::sleep(Duration::from_secs(9)).await;
    for child in &children {
        sigterm(child);
    }
    for child in &mut children {
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
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
    assert!(runs.iter().any(|(s, n)| s == "succeeded" && *n >= 2), "{runs:?}");
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
    let mut child = tokio::process::Command::from(support::binary())
        .args([
            "run", "--once", "--job", "fax", "--from", &from, "--to", &to, "--config",
        ])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some windows are in, then kill.
    for _ in 0..100 {
        let (done,): (i64,) = sqlx::query_as("SELECT count(*) FROM etl.runs WHERE status = 'succeeded'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if done >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let (interrupted,): (i64,) = sqlx::query_as("SELECT count(*) FROM etl.runs WHERE status = 'interrupted'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(interrupted <= 1, "{interrupted}");
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
    // Wait for the first window to start.
    for _ in 0..100 {
        let (running,): (i64,) = sqlx::query_as("SELECT count(*) FROM etl.runs WHERE status = 'running'")
            .fetch_one(&db.pool)
            .await
            .unwrap_or((0,));
        if running > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let mut child = tokio::process::Command::from(support::binary())
        .args(["run", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    sigterm(&child);
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
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
