//! Rate-limit efficiency of the executor: a large extraction against the sandbox's Roubler with
//! a compressed, enforced limit, reporting how close the run came to the ideal time
//! (calls ÷ limit × window) and how many calls went over the limit in any sliding window.
//!
//! A plain `main` (`harness = false`) that prints its figures; the work is bounded by the
//! limit, not by CPU, so a debug build measures the same thing: `cargo bench --profile dev
//! --bench rate_limit`. Knobs: `BENCH_CALLS` (default 2000), `BENCH_LIMIT` calls per window
//! (default 100), `BENCH_WINDOW_MS` (default 1000), `BENCH_TASKS` (default 16).

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
    let calls = knob("BENCH_CALLS", 2000) as usize;
    let limit = knob("BENCH_LIMIT", 100) as u32;
    let window = Duration::from_millis(knob("BENCH_WINDOW_MS", 1000));
    let tasks = knob("BENCH_TASKS", 16) as usize;

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
    authorise_roubler(&sandbox, &db.pool).await?;
    let registry = auth::build(&settings, db.pool.clone());
    let executor = Arc::new(Executor::new(Arc::new(settings), registry)?);

    let spent = spend(&executor, &sandbox, calls, tasks).await?;
    let elapsed = spent.elapsed;
    let ideal = window.mul_f64(calls as f64 / f64::from(limit));
    let arrivals: Vec<_> = sandbox.roubler.calls().into_iter().map(|c| c.at).collect();
    let sent = arrivals.len();
    let over = over_limit_calls(arrivals, window, limit as usize);
    println!("rate_limit bench: {calls} calls, {tasks} tasks, enforced limit {limit} per {window:?}");
    println!("  elapsed            {elapsed:.2?}");
    println!("  ideal              {ideal:.2?}");
    println!(
        "  efficiency         {:.1} % (ideal ÷ actual)",
        100.0 * ideal.as_secs_f64() / elapsed.as_secs_f64()
    );
    println!("  over-limit calls   {over}");
    println!(
        "  busiest window     {}",
        sandbox.roubler.max_calls_in_any_window(window)
    );
    println!(
        "  429 answers        {}",
        sandbox.roubler.rate_limited_responses()
    );
    println!("  calls seen         {sent}");
    println!("  retries            {}", spent.call.figures.retries());
    println!("  failed calls       {}", spent.failures);
    println!(
        "  throttled          {:.1} s over all tasks",
        spent.call.figures.throttled_ms() as f64 / 1000.0
    );
    Ok(())
}
