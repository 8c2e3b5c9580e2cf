//! The window's transaction is short: a load stages its pages outside any transaction while it
//! waits for the vendor, and only the swap (delete the window, insert the staged rows, run
//! record, watermark) runs in one. Sampled from `pg_stat_activity` and the load's pool during a
//! rate-limited extraction of 50 pages and more, run by the real runner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reporting_etl::executor::{Executor, ExecutorOptions};
use reporting_etl::jobs::runner::Runner;
use reporting_etl::store::instance::Instance;
use reporting_etl::store::locks::JobLocks;
use reporting_etl::store::runs::{RunStatus, Trigger};
use sandbox::{Sandbox, SandboxOptions};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::support::{self, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_50_page_extraction_holds_no_transaction_and_one_connection_while_it_waits() {
    let db = TestDb::new().await;
    let mut options = SandboxOptions {
        records_per_day: 10,
        ..SandboxOptions::default()
    };
    // One record per page: 60 pages from six days, at 10 calls a second.
    options.retarus.max_page_size = Some(1);
    let sandbox = Sandbox::start(options).await.unwrap();
    let extra = "\n[sources.retarus.rate_limit]\ncalls = 10\nper_ms = 1000\n\n[jobs.fax]\nsource = \"retarus\"\n\
                 dataset = \"fax_out_udr\"\nschedule = \"0 0 3 * * *\"\nscope = [\"99999\"]\n";
    let (settings, _config) = support::load_config(&support::sandbox_config(&sandbox, &db.url, extra));
    let settings = Arc::new(settings);

    // Wired as the service wires it, except that the shared rate budget and the tokens use a pool
    // of their own: the load's pool (`db.pool`) then serves the runner and its loads only, and
    // what it has handed out is what the load holds.
    let instance = Instance::register(&db.pool, &db.url, "run").await.unwrap();
    let other = reporting_etl::store::connect(&db.url, 2).await.unwrap();
    let executor = Executor::with_shared_budget(
        settings.clone(),
        reporting_etl::auth::build(&settings, other.clone()),
        ExecutorOptions::default(),
        other,
        instance.id(),
    )
    .unwrap();
    let runner = Arc::new(Runner::new(
        settings,
        db.pool.clone(),
        instance.id(),
        Arc::new(executor),
        Arc::new(JobLocks::new(&db.url)),
    ));
    let today = Utc::now().date_naive();
    let backfill = Some((today - chrono::Days::new(7), today - chrono::Days::new(1)));
    let job = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .run_job("fax", Trigger::Backfill, backfill, &CancellationToken::new())
                .await
        }
    });

    let mut sampler = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // A transaction is open in a session that is running a statement (`active`) or waiting
    // inside one (`idle in transaction`). An `idle` session is outside any transaction by
    // PostgreSQL's own definition, yet under two CPU hogs the server once reported the process's
    // heartbeat connection (single autocommit statements) as `idle` with a 3.75 s old
    // `xact_start`: such a row is not counted.
    let (mut oldest, mut held, mut samples) = (0f64, 0u32, 0u32);
    // The oldest transaction's session as sampled: what it ran, in which state, for whom.
    let mut oldest_seen = String::new();
    let started = Instant::now();
    while !job.is_finished() {
        let sampled: Option<(f64, String)> = sqlx::query_as(
            "SELECT extract(epoch FROM clock_timestamp() - xact_start)::float8, \
             format('pid %s, %s, application %L, backend started %s s before, query: %s', pid, state, \
             application_name, round(extract(epoch FROM clock_timestamp() - backend_start)::numeric, 2), \
             left(query, 200)) \
             FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend' AND xact_start IS NOT NULL AND state <> 'idle' \
             ORDER BY xact_start LIMIT 1",
        )
        .fetch_optional(&mut sampler)
        .await
        .unwrap();
        if let Some((age, session)) = sampled
            && age > oldest
        {
            (oldest, oldest_seen) = (age, session);
        }
        // Counted between the first and the last data call only: around them the runner's run
        // record and the swap take their turn, and a connection just released is back in the
        // pool's idle count only a moment later.
        let calls = sandbox.retarus.graphql_calls();
        if (2..59).contains(&calls) {
            held = held.max(db.pool.size() - db.pool.num_idle() as u32);
            samples += 1;
        }
        // A sampling interval, not a wait for an event: the job's end is what ends the loop.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let reports = job.await.unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].status, RunStatus::Succeeded, "{reports:?}");
    let (pages, rows): (i32, i64) = sqlx::query_as("SELECT pages, rows_written FROM etl.runs WHERE id = $1")
        .bind(reports[0].run_id.unwrap())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM retarus.fax_out_udr")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    println!(
        "{pages} pages, {rows} rows in {elapsed:?}; oldest transaction {oldest:.2} s; {samples} samples \
         while it waited: at most {held} connection(s) of the load's pool held"
    );
    assert!(pages >= 50, "{pages} pages");
    assert_eq!(stored, rows);
    assert!(
        elapsed > Duration::from_secs(4),
        "the extraction was rate-limited ({elapsed:?})"
    );
    assert!(
        oldest < 2.0,
        "a transaction stayed open {oldest:.2} s during the extraction ({oldest_seen})"
    );
    assert!(samples > 50, "only {samples} samples while the load waited");
    assert!(held <= 1, "the load held {held} pool connections");
}
