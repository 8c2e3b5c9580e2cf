//! Many processes, one budget: real `reporting-etl` processes on one database against the
//! sandbox's Roubler, enforcing a compressed limit (calls per second instead of per minute). A
//! scheduled service with a concurrent backfill, and three replicas, together never put more
//! than the limit into any window, get no 429, load complete data, and use the budget well. A
//! process that loses the database keeps to its fallback share of the limit.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use reporting_etl::auth;
use reporting_etl::executor::{CallContext, Executor, ExecutorOptions, ScopeHeader, Service};
use reporting_etl::store::{self, Instance};
use sandbox::ratelimit::RateLimitMode;
use sandbox::{Sandbox, SandboxOptions};
use serde_json::json;
use support::TestDb;

/// The compressed window: the vendor's 60 s as 1 s (the sandbox's reset headers are whole seconds).
const WINDOW: Duration = Duration::from_secs(1);

/// Sandbox with an enforcing Roubler of `limit` per [`WINDOW`], `companies` × 3 locations, a
/// database, and a Roubler authorisation stored as `auth login` would.
struct World {
    sandbox: Sandbox,
    db: TestDb,
    limit: u32,
    /// Company id → its location ids.
    companies: BTreeMap<String, Vec<String>>,
}

async fn world(limit: u32, companies: u32) -> World {
    let mut options = SandboxOptions::default();
    options.roubler.rate_limit = limit;
    options.roubler.rate_window = WINDOW;
    options.roubler.rate_mode = RateLimitMode::Enforcing;
    options.roubler.companies = companies;
    options.roubler.locations_per_company = 3;
    let sandbox = Sandbox::start(options).await.unwrap();
    let db = TestDb::new().await;
    let grant = sandbox.roubler.grant_tokens();
    support::seed_refresh_chain(&db.pool, "roubler", &grant, grant.expires_in as f64).await;
    let companies = sandbox
        .roubler
        .companies()
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap().to_owned();
            let locations = sandbox
                .roubler
                .locations(&id)
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_owned())
                .collect();
            (id, locations)
        })
        .collect();
    World {
        sandbox,
        db,
        limit,
        companies,
    }
}

impl World {
    fn company(&self, index: usize) -> &str {
        self.companies.keys().nth(index).unwrap()
    }

    /// A config file: the sandbox sources, Roubler's limit, `jobs`, and `/metrics` on `port`.
    fn config(&self, jobs: &str, port: u16) -> tempfile::NamedTempFile {
        let extra = format!(
            "\n[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 10\n\
             \n[sources.roubler.rate_limit]\ncalls = {}\nper_ms = {}\n{jobs}",
            self.limit,
            WINDOW.as_millis()
        );
        support::load_config(&support::sandbox_config(&self.sandbox, &self.db.url, &extra)).1
    }

    /// Every timesheet of `job`'s loaded windows is in the table exactly once, for each location
    /// of `company`; returns the number of rows.
    async fn assert_complete(&self, job: &str, company: &str) -> usize {
        let mut total = 0;
        for location in &self.companies[company] {
            let windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
                "SELECT window_start, window_end FROM etl.runs
                 WHERE job = $1 AND scope = $2 AND status = 'succeeded'",
            )
            .bind(job)
            .bind(location)
            .fetch_all(&self.db.pool)
            .await
            .unwrap();
            assert!(!windows.is_empty(), "{job}: no window of {location} loaded");
            let expected: usize = windows
                .iter()
                .map(|(start, end)| self.sandbox.roubler.timesheets(location, *start, *end).len())
                .sum();
            let (rows,): (i64,) = sqlx::query_as(
                "SELECT count(DISTINCT timesheet_id) FROM roubler.timesheets WHERE location_id = $1",
            )
            .bind(location)
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
            let (all,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM roubler.timesheets WHERE location_id = $1")
                    .bind(location)
                    .fetch_one(&self.db.pool)
                    .await
                    .unwrap();
            assert_eq!(rows as usize, expected, "{job}: timesheets of {location}");
            assert_eq!(all, rows, "{job}: duplicate timesheets at {location}");
            total += expected;
        }
        total
    }

    /// Waits until `job` has loaded every location of `company` up to about now.
    async fn wait_for_job(&self, job: &str, company: &str, since: DateTime<Utc>, limit: Duration) {
        let locations = self.companies[company].len() as i64;
        support::wait_until(
            &format!("{job} to load all {locations} locations of {company} and finish its runs"),
            limit,
            || async move {
                let (done, running): (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM etl.watermarks WHERE job = $1 AND high_water >= $2),
                            (SELECT count(*) FROM etl.runs WHERE job = $1 AND status = 'running')",
                )
                .bind(job)
                .bind(since - chrono::Duration::hours(1))
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
                done >= locations && running == 0
            },
        )
        .await;
    }

    /// Calls the sandbox saw: how many, the busiest window, 429s, and first-to-last span.
    fn figures(&self) -> (usize, usize, u64, Duration) {
        let calls = self.sandbox.roubler.calls();
        let span = match (calls.first(), calls.last()) {
            (Some(first), Some(last)) => last.at.duration_since(first.at),
            _ => Duration::ZERO,
        };
        (
            calls.len(),
            self.sandbox.roubler.max_calls_in_any_window(WINDOW),
            self.sandbox.roubler.rate_limited_responses(),
            span,
        )
    }
}

/// A timesheets job on one company's locations, incremental from `days` ago.
fn sheets_job(name: &str, company: &str, schedule: &str, days: i64) -> String {
    let start = Utc::now().date_naive() - chrono::Duration::days(days);
    format!(
        "\n[jobs.{name}]\nsource = \"roubler\"\ndataset = \"timesheets\"\nschedule = \"{schedule}\"\n\
         scope = [\"{company}\"]\nstart = \"{start}\"\n"
    )
}

/// A cron expression that fires once, at `at` (UTC, whole second).
fn once_at(at: DateTime<Utc>) -> String {
    format!("{} {} {} * * *", at.second(), at.minute(), at.hour())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn stop(mut child: tokio::process::Child, log: &Path) {
    let pid = child.id().expect("running") as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stops within the grace period")
        .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Runs of `job` recorded so far, whatever their status.
async fn count_runs_of(db: &TestDb, job: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM etl.runs WHERE job = $1")
        .bind(job)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    n
}

/// Per process: (command, calls, waited ms, first call, last call) from `etl.rate_budget_usage`.
async fn usage(db: &TestDb) -> Vec<(String, i64, i64, DateTime<Utc>, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT i.command, u.calls, u.waited_ms, u.first_call_at, u.last_call_at
         FROM etl.rate_budget_usage u JOIN etl.instances i ON i.id = u.instance_id
         WHERE u.source = 'roubler' ORDER BY u.first_call_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_service_and_a_concurrent_backfill_share_one_budget_without_a_429() {
    const LIMIT: u32 = 10;
    let w = world(LIMIT, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let started = Utc::now();
    let fire = started + chrono::Duration::seconds(4);
    let today = started.date_naive();
    let from = today - chrono::Duration::days(140);
    let jobs = format!(
        "{}{}",
        sheets_job("live", w.company(0), &once_at(fire), 140),
        // Only run by hand (the backfill): the service does not schedule it.
        sheets_job("history", w.company(1), "0 0 0 1 1 *", 140) + "enabled = false\n",
    );
    let file = w.config(&jobs, free_port());
    let service_log = dir.path().join("service.log");
    let service = support::spawn_service(file.path(), &service_log);

    // The backfill starts as soon as the service's job has fired (its first run is recorded), so
    // the two overlap for most of the backfill. (Sleeping until just before the fire panicked
    // whenever the set-up took longer than the margin.)
    support::wait_until(
        &format!("the service's job `live` to fire at {fire}"),
        Duration::from_secs(60),
        || async { count_runs_of(&w.db, "live").await > 0 },
    )
    .await;
    let backfill = tokio::process::Command::from(support::binary())
        .args(["run", "--once", "--job", "history", "--from"])
        .arg(from.to_string())
        .arg("--to")
        .arg(today.to_string())
        .arg("--config")
        .arg(file.path())
        .output();
    let backfill = tokio::time::timeout(Duration::from_secs(90), backfill)
        .await
        .expect("the backfill finishes")
        .unwrap();
    assert!(
        backfill.status.success(),
        "{}{}",
        String::from_utf8_lossy(&backfill.stdout),
        String::from_utf8_lossy(&backfill.stderr)
    );
    w.wait_for_job("live", w.company(0), started, Duration::from_secs(90))
        .await;
    stop(service, &service_log).await;

    let (calls, busiest, refused, span) = w.figures();
    let live_rows = w.assert_complete("live", w.company(0)).await;
    let history_rows = w.assert_complete("history", w.company(1)).await;
    let usage = usage(&w.db).await;
    let busy = span + WINDOW;
    let ideal = WINDOW.mul_f64(calls as f64 / f64::from(LIMIT));
    println!(
        "service + backfill, enforced {LIMIT}/{WINDOW:?}: {calls} calls, budget busy {busy:.2?} against an \
         ideal of {ideal:.2?} ({:+.1} %), busiest window {busiest}, 429s {refused}, rows {live_rows} + {history_rows}",
        (busy.as_secs_f64() / ideal.as_secs_f64() - 1.0) * 100.0,
    );
    for (command, calls, waited_ms, first, last) in &usage {
        println!("  {command:<12} {calls:>4} calls, waited {waited_ms} ms, {first} → {last}");
    }
    assert_eq!(refused, 0, "no call was refused");
    assert!(busiest <= LIMIT as usize, "{busiest} calls in one window");
    assert_eq!(usage.len(), 2, "both processes took slots: {usage:?}");
    let (service_use, backfill_use) = (
        &usage.iter().find(|u| u.0 == "run").unwrap(),
        &usage.iter().find(|u| u.0 == "run --once").unwrap(),
    );
    assert!(
        service_use.3 < backfill_use.4 && backfill_use.3 < service_use.4,
        "the two processes ran at the same time: {usage:?}"
    );
    assert_eq!(
        usage.iter().map(|u| u.1).sum::<i64>() as usize,
        calls,
        "every call the upstream saw took a slot of the shared budget"
    );

    // `runs` shows the split per process.
    let runs = support::binary()
        .args(["runs", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&runs.stdout);
    assert!(runs.status.success(), "{text}");
    println!(
        "{}",
        text.lines()
            .skip_while(|l| !l.starts_with("Rate budget"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        text.contains("Rate budget") && text.contains("run --once") && text.contains("roubler"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_one_budget_without_a_429_and_every_call_takes_a_slot() {
    const LIMIT: u32 = 15;
    let w = world(LIMIT, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let started = Utc::now();
    let fire = once_at(started + chrono::Duration::seconds(5));
    let mut replicas = Vec::new();
    let mut files = Vec::new();
    for replica in 0..3 {
        let job = sheets_job(&format!("sheets_{replica}"), w.company(replica), &fire, 140);
        let file = w.config(&job, free_port());
        let log = dir.path().join(format!("replica-{replica}.log"));
        replicas.push((support::spawn_service(file.path(), &log), log));
        files.push(file);
    }
    for replica in 0..3 {
        w.wait_for_job(
            &format!("sheets_{replica}"),
            w.company(replica),
            started,
            Duration::from_secs(120),
        )
        .await;
    }
    for (child, log) in replicas {
        stop(child, &log).await;
    }

    let (calls, busiest, refused, span) = w.figures();
    let mut rows = 0;
    for replica in 0..3 {
        rows += w
            .assert_complete(&format!("sheets_{replica}"), w.company(replica))
            .await;
    }
    let usage = usage(&w.db).await;
    // The budget was busy from the first call until the last one left its window.
    let busy = span + WINDOW;
    let ideal = WINDOW.mul_f64(calls as f64 / f64::from(LIMIT));
    let off = busy.as_secs_f64() / ideal.as_secs_f64() - 1.0;
    println!(
        "3 replicas, enforced {LIMIT}/{WINDOW:?}: {calls} calls, budget busy {busy:.2?} against an ideal of \
         {ideal:.2?} ({:+.1} %), busiest window {busiest}, 429s {refused}, {rows} rows",
        off * 100.0
    );
    for (command, calls, waited_ms, first, last) in &usage {
        println!("  {command:<6} {calls:>4} calls, waited {waited_ms} ms, {first} → {last}");
    }
    assert_eq!(refused, 0, "no call was refused");
    assert!(busiest <= LIMIT as usize, "{busiest} calls in one window");
    assert_eq!(usage.len(), 3, "every replica took slots: {usage:?}");
    assert!(usage.iter().all(|u| u.1 > 0));
    assert_eq!(
        usage.iter().map(|u| u.1).sum::<i64>() as usize,
        calls,
        "every call the upstream saw took a slot of the shared budget"
    );
    // How close the replicas came to the ideal time is an efficiency figure, printed above and
    // measured by `benches/budget.rs` (target: within 15 %).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_that_loses_the_database_keeps_to_half_the_limit_and_counts_its_recent_calls() {
    const LIMIT: u32 = 10;
    let w = world(LIMIT, 1).await;
    let (settings, _file) = support::load_config(&support::sandbox_config(
        &w.sandbox,
        &w.db.url,
        &format!(
            "\n[sources.roubler.rate_limit]\ncalls = {LIMIT}\nper_ms = {}\n[rate_budget]\nfallback_share = 0.5\n",
            WINDOW.as_millis()
        ),
    ));
    // This "process" has its own pool, which the test closes to cut it off from the database.
    let pool = store::connect(&w.db.url, 2).await.unwrap();
    let instance = Instance::register(&pool, &w.db.url, "test").await.unwrap();
    let registry = auth::build(&settings, w.db.pool.clone());
    let executor = Executor::with_shared_budget(
        Arc::new(settings),
        registry,
        ExecutorOptions::default(),
        pool.clone(),
        instance.id(),
    )
    .unwrap();
    let scope = ScopeHeader::Company(w.company(0).to_owned());
    let call = CallContext::new("roubler", "locations");
    for _ in 0..8 {
        executor
            .execute::<support::RoublerLocations>(&call, Service::DEFAULT, &scope, json!({}))
            .await
            .expect("call succeeds");
    }
    pool.close().await;
    let cut_at = tokio::time::Instant::now();
    for _ in 0..20 {
        executor
            .execute::<support::RoublerLocations>(&call, Service::DEFAULT, &scope, json!({}))
            .await
            .expect("calls go on without the database");
    }
    let elapsed = cut_at.elapsed();
    let after: Vec<_> = w
        .sandbox
        .roubler
        .calls()
        .into_iter()
        .filter(|c| c.at >= cut_at)
        .map(|c| c.at)
        .collect();
    let busiest_after = support::max_in_any_window(after, WINDOW);
    let (calls, busiest, refused, _) = w.figures();
    println!(
        "database lost after 8 calls: 20 more in {elapsed:.2?}, busiest window since {busiest_after} \
         (overall {busiest}), {calls} calls, 429s {refused}"
    );
    assert_eq!(refused, 0);
    assert!(busiest <= LIMIT as usize, "{busiest}");
    assert!(
        busiest_after <= LIMIT as usize / 2,
        "{busiest_after} calls in one window on the fallback"
    );
    // 20 calls at 5 a window, the first window partly spent by the 8 calls before the cut.
    assert!(
        elapsed >= WINDOW * 3,
        "{elapsed:?}: the fallback is a limit, not no limit"
    );
}
