//! The shared rate budget with 1, 2 and 3 processes spending one Roubler limit: calls per window
//! the sandbox observed, the busiest window, 429s, and budget efficiency (the ideal time for the
//! calls ÷ the time the budget was busy, from the first call until the last left its window).
//!
//! Each "process" is an executor with its own connection pool, its own `etl.instances` row and
//! its own in-process limiter, so it shares nothing with the others but the database, as real
//! processes do (tests/it/replicas.rs runs real ones). A plain `main` (`harness = false`); the work
//! is bounded by the limit, not by CPU: `cargo bench --profile dev --bench budget`. Knobs:
//! `BENCH_CALLS` in total per run (default 300), `BENCH_LIMIT` per window (default 20),
//! `BENCH_WINDOW_MS` (default 1000), `BENCH_TASKS` per process (default 4).

#[path = "../tests/it/support/mod.rs"]
mod support;

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Locations, knob};
use reporting_etl::auth;
use reporting_etl::executor::{CallContext, Executor, ExecutorOptions, ScopeHeader, Service};
use reporting_etl::store::{self, Instance};
use sandbox::ratelimit::RateLimitMode;
use sandbox::{Sandbox, SandboxOptions};
use serde_json::json;

/// What one run measured.
struct Figures {
    processes: usize,
    calls: usize,
    busy: Duration,
    ideal: Duration,
    busiest: usize,
    refused: u64,
    failed: usize,
    per_process: Vec<(i64, i64)>,
}

async fn run(
    processes: usize,
    calls: usize,
    limit: u32,
    window: Duration,
    tasks: usize,
) -> anyhow::Result<Figures> {
    let mut options = SandboxOptions::default();
    options.roubler.rate_limit = limit;
    options.roubler.rate_window = window;
    options.roubler.rate_mode = RateLimitMode::Enforcing;
    let sandbox = Sandbox::start(options).await?;
    let db = support::TestDb::new().await;
    let extra = format!(
        "\n[sources.roubler.rate_limit]\ncalls = {limit}\nper_ms = {}\n",
        window.as_millis()
    );
    let (settings, _file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    let settings = Arc::new(settings);
    let grant = sandbox.roubler.grant_tokens();
    sqlx::query(
        "INSERT INTO etl.tokens (source, flow, access_token, access_expires_at, refresh_token,
                                 refresh_token_encrypted, version, chain_started_at, last_refresh_at)
         VALUES ('roubler', 'authorization_code', $1, now() + make_interval(secs => $2), $3, false, 1, now(), now())",
    )
    .bind(&grant.access_token)
    .bind(grant.expires_in as f64)
    .bind(grant.refresh_token.clone().unwrap_or_default().into_bytes())
    .execute(&db.pool)
    .await?;
    let company = sandbox.roubler.companies()[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let mut executors = Vec::new();
    let mut instances = Vec::new();
    for _ in 0..processes {
        let pool = store::connect(&db.url, 4).await?;
        let instance = Instance::register(&pool, &db.url, "bench").await?;
        let registry = auth::build(&settings, pool.clone());
        executors.push(Arc::new(Executor::with_shared_budget(
            settings.clone(),
            registry,
            ExecutorOptions::default(),
            pool,
            instance.id(),
        )?));
        instances.push(instance);
    }
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for executor in &executors {
        // Each process has its share of the calls to make, as replicas with a job each.
        let issued = Arc::new(AtomicUsize::new(0));
        let share = calls / processes;
        for _ in 0..tasks {
            let (executor, issued, failed) = (executor.clone(), issued.clone(), failed.clone());
            let scope = ScopeHeader::Company(company.clone());
            let call = CallContext::new("roubler", "bench");
            workers.push(tokio::spawn(async move {
                while issued.fetch_add(1, Ordering::SeqCst) < share {
                    let answer = executor
                        .execute::<Locations>(&call, Service::DEFAULT, &scope, json!({}))
                        .await;
                    if let Err(e) = answer {
                        eprintln!("{e}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
    }
    for worker in workers {
        worker.await?;
    }

    let log = sandbox.roubler.calls();
    let span = match (log.first(), log.last()) {
        (Some(first), Some(last)) => last.at.duration_since(first.at),
        _ => Duration::ZERO,
    };
    let per_process: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT calls, waited_ms FROM etl.rate_budget_usage WHERE source = 'roubler' ORDER BY first_call_at",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(Figures {
        processes,
        calls: log.len(),
        busy: span + window,
        ideal: window.mul_f64(log.len() as f64 / f64::from(limit)),
        busiest: sandbox.roubler.max_calls_in_any_window(window),
        refused: sandbox.roubler.rate_limited_responses(),
        failed: failed.load(Ordering::SeqCst),
        per_process,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let calls = knob("BENCH_CALLS", 300) as usize;
    let limit = knob("BENCH_LIMIT", 20) as u32;
    let window = Duration::from_millis(knob("BENCH_WINDOW_MS", 1000));
    let tasks = knob("BENCH_TASKS", 4) as usize;
    println!(
        "budget bench: {calls} calls per run, enforced limit {limit} per {window:?}, {tasks} tasks per process"
    );
    println!(
        "{:>9}  {:>5}  {:>9}  {:>9}  {:>15}  {:>7}  {:>10}  {:>4}  {:>6}  per process (calls / waited s)",
        "processes", "calls", "busy", "ideal", "calls/window", "busiest", "efficiency", "429", "failed"
    );
    for processes in 1..=3 {
        let f = run(processes, calls, limit, window, tasks).await?;
        let windows = f.busy.as_secs_f64() / window.as_secs_f64();
        let split = f
            .per_process
            .iter()
            .map(|(calls, waited)| format!("{calls} / {:.1}", *waited as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:>9}  {:>5}  {:>8.2}s  {:>8.2}s  {:>7.2} of {:>4}  {:>7}  {:>9.1}%  {:>4}  {:>6}  {split}",
            f.processes,
            f.calls,
            f.busy.as_secs_f64(),
            f.ideal.as_secs_f64(),
            f.calls as f64 / windows,
            limit,
            f.busiest,
            100.0 * f.ideal.as_secs_f64() / f.busy.as_secs_f64(),
            f.refused,
            f.failed,
        );
    }
    Ok(())
}
