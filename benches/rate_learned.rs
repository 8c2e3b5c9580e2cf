//! Header-learned rate limits: the configuration says Roubler's documented 100 calls per 60 s,
//! while the sandbox enforces a stricter limit (default 10 per 6 s) and says so only in its
//! `X-RateLimit-*` headers. The executor must learn limit and window from the headers and then
//! use the budget fully without going over it.
//!
//! Efficiency = ideal ÷ busy time, where ideal = calls ÷ limit × window and the busy time runs
//! from the first call until the last one has left its window (elapsed + window): a client that
//! spends every window's budget scores 1.0, one that learned the limit but kept the configured
//! 60-second window scores ~0.1. Over-limit calls are counted in every sliding window.
//!
//! A plain `main` (`harness = false`); the work is bounded by the limit, not by CPU:
//! `cargo bench --profile dev --bench rate_learned`. Knobs: `BENCH_CALLS` (default 60),
//! `BENCH_LIMIT` (default 10), `BENCH_WINDOW_MS` (default 6000), `BENCH_TASKS` (default 4).
//! The last line reads `rate_learned efficiency=<ratio> over_limit=<n>`.

#[path = "../tests/it/support/mod.rs"]
mod support;

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{authorise_roubler, knob, over_limit_calls, spend};
use reporting_etl::auth;
use reporting_etl::executor::Executor;
use sandbox::roubler::RateLimitMode;
use sandbox::{Sandbox, SandboxOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let calls = knob("BENCH_CALLS", 60) as usize;
    let limit = knob("BENCH_LIMIT", 10) as u32;
    let window = Duration::from_millis(knob("BENCH_WINDOW_MS", 6000));
    let tasks = knob("BENCH_TASKS", 4) as usize;

    let mut options = SandboxOptions::default();
    options.roubler.rate_limit = limit;
    options.roubler.rate_window = window;
    options.roubler.rate_mode = RateLimitMode::Enforcing;
    let sandbox = Sandbox::start(options).await?;
    let db = support::TestDb::new().await;
    // No `rate_limit` for Roubler: the documented default (100 per 60 s) is configured.
    let (settings, _file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, ""));
    authorise_roubler(&sandbox, &db.pool).await?;
    let registry = auth::build(&settings, db.pool.clone());
    let executor = Arc::new(Executor::new(Arc::new(settings), registry)?);

    let spent = spend(&executor, &sandbox, calls, tasks).await?;
    let ideal = window.mul_f64(calls as f64 / f64::from(limit));
    let busy = spent.elapsed + window;
    let efficiency = ideal.as_secs_f64() / busy.as_secs_f64();
    let arrivals: Vec<_> = sandbox.roubler.calls().into_iter().map(|c| c.at).collect();
    let sent = arrivals.len();
    let over = over_limit_calls(arrivals, window, limit as usize);
    println!(
        "rate_learned bench: {calls} calls, {tasks} tasks, configured 100 per 60s, enforced and announced {limit} per {window:?}"
    );
    println!("  learned            {:?}", executor.learned_limit("roubler"));
    println!(
        "  elapsed            {:.2?} (busy {busy:.2?} with the last window)",
        spent.elapsed
    );
    println!("  ideal              {ideal:.2?}");
    println!(
        "  429 answers        {}",
        sandbox.roubler.rate_limited_responses()
    );
    println!("  calls seen         {sent}");
    println!("  failed calls       {}", spent.failures);
    println!(
        "  throttled          {:.1} s over all tasks",
        spent.call.figures.throttled_ms() as f64 / 1000.0
    );
    println!("rate_learned efficiency={efficiency:.3} over_limit={over}");
    Ok(())
}
