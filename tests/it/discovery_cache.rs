//! Issue 13, items 6 and 9 and the calls breakdown: Roubler scope discovery cached per source in
//! `etl.scope_cache` (one round per TTL for every job and process, refreshed when the vendor
//! refuses a scope), a per-window deadline that fails a hanging window and keeps the previous
//! rows, and `etl.runs`' breakdown of calls (data, discovery, token, retries) checked against the
//! sandbox's own counters. Every run is the real binary against the sandbox and PostgreSQL.

use std::path::Path;
use std::time::{Duration, Instant};

use sandbox::faults::{FaultPlan, RawAnswer};
use sandbox::roubler::RoublerOptions;
use sandbox::{Sandbox, SandboxOptions};

use crate::support::{self, TestDb};

/// The five Roubler datasets, one job each.
const FIVE_JOBS: &str = r#"
[jobs.locations]
source = "roubler"
dataset = "locations"
schedule = "0 0 0 * * *"

[jobs.employees]
source = "roubler"
dataset = "employees"
schedule = "0 0 0 * * *"

[jobs.sales]
source = "roubler"
dataset = "location_sales"
schedule = "0 0 0 * * *"

[jobs.timesheets]
source = "roubler"
dataset = "timesheets"
schedule = "0 0 0 * * *"

[jobs.shifts]
source = "roubler"
dataset = "shifts"
schedule = "0 0 0 * * *"
"#;

/// Runs the binary with `args` (plus a two-day backfill when `backfill`), the Roubler discovery
/// TTL set through the environment, and returns its output.
async fn run(config: &Path, ttl_secs: u64, args: &[&str], backfill: bool) -> std::process::Output {
    let today = chrono::Utc::now().date_naive();
    let (from, to) = ((today - chrono::Days::new(2)).to_string(), today.to_string());
    let mut command = tokio::process::Command::from(support::binary());
    command.args(args).arg("--config").arg(config);
    if backfill {
        command.args(["--from", &from, "--to", &to]);
    }
    command.env(
        "REPORTING_ETL__SOURCES__ROUBLER__DISCOVERY_TTL_SECS",
        ttl_secs.to_string(),
    );
    command.output().await.expect("the binary runs")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn sum(pool: &sqlx::PgPool, column: &str, filter: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum({column}), 0)::bigint FROM etl.runs WHERE {filter}"
    )))
    .fetch_one(pool)
    .await
    .expect("sum over runs")
}

async fn max_run_id(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM etl.runs")
        .fetch_one(pool)
        .await
        .expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_five_roubler_datasets_share_one_discovery_round_per_ttl_across_processes() {
    let options = SandboxOptions {
        roubler: RoublerOptions {
            companies: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let sandbox = Sandbox::start(options).await.expect("sandbox");
    let db = TestDb::new().await;
    support::seed_refresh_chain(&db.pool, "roubler", &sandbox.roubler.grant_tokens(), 3600.0).await;
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, FIVE_JOBS));
    let roubler = &sandbox.roubler;
    assert_eq!(roubler.companies().len(), 2);

    // First process: all five jobs, one discovery round (viewer + locations of each company).
    let first = run(file.path(), 3600, &["run", "--once"], true).await;
    assert!(first.status.success(), "{}", text(&first));
    let discovery_runs: Vec<(String, i32)> =
        sqlx::query_as("SELECT job, discovery_calls FROM etl.runs WHERE discovery_calls > 0 ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .expect("runs");
    println!(
        "first process: viewer calls {}, locations calls {}, runs carrying discovery {discovery_runs:?}",
        roubler.operation_calls("Viewer"),
        roubler.operation_calls("Locations")
    );
    assert_eq!(roubler.operation_calls("Viewer"), 1, "one discovery round");
    // Two for discovery (one per company) and two for the `locations` dataset's snapshots.
    assert_eq!(roubler.operation_calls("Locations"), 4);
    assert_eq!(discovery_runs.len(), 1, "{discovery_runs:?}");
    assert_eq!(discovery_runs[0].1, 3, "viewer and two companies' locations");
    let (cached,): (i64,) = sqlx::query_as("SELECT count(*) FROM etl.scope_cache WHERE source = 'roubler'")
        .fetch_one(&db.pool)
        .await
        .expect("cache");
    assert_eq!(cached, 1);

    // A second process within the TTL asks the vendor for nothing.
    let before = max_run_id(&db.pool).await;
    let second = run(file.path(), 3600, &["run", "--once"], true).await;
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(roubler.operation_calls("Viewer"), 1, "the cache served every job");
    assert_eq!(
        roubler.operation_calls("Locations"),
        6,
        "only the locations dataset's two snapshots"
    );
    assert_eq!(
        sum(&db.pool, "discovery_calls", &format!("id > {before}")).await,
        0
    );

    // Once the entry is older than the TTL (1 s here), the next job discovers again.
    support::wait_until("the cached scopes to be older than 1 s", Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT discovered_at < now() - interval '1 second' FROM etl.scope_cache WHERE source = 'roubler'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap_or(false)
    })
    .await;
    let before = max_run_id(&db.pool).await;
    // A snapshot job: it always has a window to carry the discovery's calls.
    let third = run(file.path(), 1, &["run", "--once", "--job", "employees"], true).await;
    assert!(third.status.success(), "{}", text(&third));
    assert_eq!(roubler.operation_calls("Viewer"), 2, "rediscovered after the TTL");
    assert_eq!(
        sum(&db.pool, "discovery_calls", &format!("id > {before}")).await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_the_vendor_refuses_drops_the_cache_and_the_next_run_rediscovers() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.expect("sandbox");
    let db = TestDb::new().await;
    support::seed_refresh_chain(&db.pool, "roubler", &sandbox.roubler.grant_tokens(), 3600.0).await;
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, FIVE_JOBS));
    let roubler = &sandbox.roubler;
    let shifts = ["run", "--once", "--job", "shifts"];

    let first = run(file.path(), 3600, &shifts, false).await;
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(roubler.operation_calls("Viewer"), 1);

    // The cache now names a location the vendor does not know (one closed since discovery).
    sqlx::query(
        r#"UPDATE etl.scope_cache
           SET scopes = jsonb_insert(scopes, '{companies,0,locations,0}', '{"id": "999999", "time_zone": "UTC"}')
           WHERE source = 'roubler'"#,
    )
    .execute(&db.pool)
    .await
    .expect("poison the cache");
    let before = max_run_id(&db.pool).await;
    let second = run(file.path(), 3600, &shifts, false).await;
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let failed: Vec<(String, String)> =
        sqlx::query_as("SELECT scope, error FROM etl.runs WHERE status = 'failed' AND id > $1 ORDER BY id")
            .bind(before)
            .fetch_all(&db.pool)
            .await
            .expect("runs");
    println!("second run's failures: {failed:?}");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "999999");
    assert!(
        failed[0].1.contains("the upstream refused the scope")
            && failed[0].1.contains("location 999999")
            && failed[0].1.ends_with(
                "the cached scopes of source roubler were dropped, so the next run asks the vendor for them again"
            ),
        "{}",
        failed[0].1
    );
    assert_eq!(
        roubler.operation_calls("Viewer"),
        1,
        "the second run used the cache"
    );
    let (cached,): (i64,) = sqlx::query_as("SELECT count(*) FROM etl.scope_cache")
        .fetch_one(&db.pool)
        .await
        .expect("cache");
    assert_eq!(cached, 0, "the refusal dropped the cached scopes");

    // The next run asks the vendor again and no longer knows the closed location.
    let before = max_run_id(&db.pool).await;
    let third = run(file.path(), 3600, &shifts, false).await;
    assert!(third.status.success(), "{}", text(&third));
    assert_eq!(roubler.operation_calls("Viewer"), 2);
    let scopes: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT scope FROM etl.runs WHERE id > $1 AND status <> 'succeeded'")
            .bind(before)
            .fetch_all(&db.pool)
            .await
            .expect("runs");
    assert_eq!(scopes, Vec::<(String,)>::new());
    let (stale,): (bool,) =
        sqlx::query_as("SELECT scopes::text LIKE '%999999%' FROM etl.scope_cache WHERE source = 'roubler'")
            .fetch_one(&db.pool)
            .await
            .expect("cache");
    assert!(!stale, "the rediscovered scopes do not name the closed location");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_fails_the_window_at_its_deadline_and_keeps_the_previous_rows() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.expect("sandbox");
    let db = TestDb::new().await;
    let job = r#"
[jobs.companies]
source = "retently"
dataset = "companies"
schedule = "0 0 0 * * *"
window_deadline_secs = 2
"#;
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, job));
    let once = ["run", "--once", "--job", "companies"];
    let first = run(file.path(), 3600, &once, false).await;
    assert!(first.status.success(), "{}", text(&first));
    let table = || async {
        sqlx::query_as::<_, (i64, Option<String>)>(
            "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM retently.companies t",
        )
        .fetch_one(&db.pool)
        .await
        .expect("table")
    };
    let loaded = table().await;
    assert!(loaded.0 > 0, "the first run loaded rows");

    // Every answer now hangs far longer than the deadline (and than the request timeout).
    sandbox.retently.faults.set(FaultPlan {
        timeout_rate: 1.0,
        hang_for: Duration::from_secs(300),
        ..Default::default()
    });
    let started = Instant::now();
    let second = run(file.path(), 3600, &once, false).await;
    let took = started.elapsed();
    let (status, error, seconds): (String, Option<String>, f64) = sqlx::query_as(
        "SELECT status, error, extract(epoch FROM finished_at - started_at)::float8
         FROM etl.runs ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("the second run's record");
    println!(
        "first run:\n{}\nhanging run: exit {:?} after {took:?}, recorded {status} in {seconds:.2} s: {error:?}\n{}",
        text(&first),
        second.status.code(),
        text(&second)
    );
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert_eq!(status, "failed");
    assert_eq!(
        error.as_deref(),
        Some(
            "window deadline of 2 s exceeded (jobs.companies.window_deadline_secs); the window was rolled back"
        )
    );
    // The window stopped at its deadline, not after a request timeout (60 s) or the hang.
    assert!((2.0..10.0).contains(&seconds), "{seconds}");
    assert_eq!(table().await, loaded, "the previous rows are intact");
    assert!(sandbox.retently.faults.counts().timeouts >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_call_breakdown_adds_up_to_its_calls_and_matches_the_sandbox_counters() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.expect("sandbox");
    let db = TestDb::new().await;
    // An expired access token: the first call refreshes it (one token request).
    support::seed_refresh_chain(&db.pool, "roubler", &sandbox.roubler.grant_tokens(), -60.0).await;
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, FIVE_JOBS));
    let roubler = &sandbox.roubler;
    // Discovery's two calls pass; the first data call meets a 503 and is retried.
    roubler.faults.script_after(2, vec![RawAnswer::new(503, "busy")]);
    let output = run(file.path(), 3600, &["run", "--once", "--job", "sales"], true).await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(roubler.faults.scripted_remaining(), 0, "the 503 was served");

    let rows: Vec<(i32, i32, i32, i32, i32)> = sqlx::query_as(
        "SELECT upstream_calls, data_calls, discovery_calls, token_calls, retry_calls FROM etl.runs ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("runs");
    println!("runs (calls, data, discovery, token, retry): {rows:?}");
    for (calls, data, discovery, token, retry) in &rows {
        assert_eq!(*calls, data + discovery + token + retry, "{rows:?}");
    }
    let windows = rows.len() as i64;
    assert_eq!(
        windows,
        roubler
            .companies()
            .iter()
            .map(|c| { roubler.locations(c["id"].as_str().expect("id")).len() })
            .sum::<usize>() as i64,
        "one two-day window per location"
    );
    let total = |i: usize| -> i64 { rows.iter().map(|r| i64::from([r.0, r.1, r.2, r.3, r.4][i])).sum() };
    let counts = roubler.counts();
    let graphql_requests = roubler.calls().len() as i64;
    println!(
        "sandbox: {graphql_requests} /graphql requests, {} refreshes, Viewer {}, Locations {}, LocationSales {}",
        counts.refreshes,
        roubler.operation_calls("Viewer"),
        roubler.operation_calls("Locations"),
        roubler.operation_calls("LocationSales")
    );
    // Every request the sandbox saw, and no other, is in the runs' figures.
    assert_eq!(total(0), graphql_requests + counts.refreshes as i64);
    assert_eq!(
        total(2),
        (roubler.operation_calls("Viewer") + roubler.operation_calls("Locations")) as i64
    );
    assert_eq!(total(2), 2, "viewer and the one company's locations");
    assert_eq!(total(3), counts.refreshes as i64);
    assert_eq!(total(3), 1);
    assert_eq!(total(4), 1, "the 503 was retried once");
    // Each window's first attempt, the one that met the 503 included (it never reached the API).
    assert_eq!(total(1), windows);
    assert_eq!(
        roubler.operation_calls("LocationSales") as i64,
        total(1) + total(4) - 1
    );

    // `runs` shows the breakdown next to the total.
    let listing = support::binary()
        .args(["runs", "--config"])
        .arg(file.path())
        .output()
        .expect("runs");
    let listing = String::from_utf8_lossy(&listing.stdout);
    println!("{listing}");
    assert!(listing.contains("DATA/DISC/TOKEN/RETRY"), "{listing}");
    let first = rows.first().expect("a run");
    assert!(
        listing.contains(&format!("{}/{}/{}/{}", first.1, first.2, first.3, first.4)),
        "{listing}"
    );
}
