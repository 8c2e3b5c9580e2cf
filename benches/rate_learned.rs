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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use graphql_client::{GraphQLQuery, QueryBody};
use reporting_etl::auth::store::{NewTokens, TokenStore};
use reporting_etl::auth::{self, AccessToken, RefreshToken};
use reporting_etl::executor::{CallContext, Executor, ScopeHeader, Service};
use sandbox::roubler::RateLimitMode;
use sandbox::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

/// The cheapest company-scoped Roubler query.
struct Locations;

impl GraphQLQuery for Locations {
    type Variables = Value;
    type ResponseData = Value;
    fn build_query(variables: Value) -> QueryBody<Value> {
        QueryBody {
            variables,
            query: "query Locations { locations { id } }",
            operation_name: "Locations",
        }
    }
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Calls that were the (limit+1)-th or later within the window ending at their arrival.
fn over_limit_calls(mut times: Vec<tokio::time::Instant>, window: Duration, limit: usize) -> usize {
    times.sort();
    let mut first = 0;
    let mut over = 0;
    for (last, at) in times.iter().enumerate() {
        while at.duration_since(times[first]) >= window {
            first += 1;
        }
        if last + 1 - first > limit {
            over += 1;
        }
    }
    over
}

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
    let extra = "";
    let (settings, _file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, extra));

    // A Roubler authorisation, as `auth login` would store it.
    let grant = sandbox.roubler.grant_tokens();
    let (lock, _) = TokenStore::new(db.pool.clone(), None)
        .lock("roubler", "authorization_code")
        .await
        .map_err(anyhow::Error::msg)?;
    let refresh = RefreshToken::new(grant.refresh_token.unwrap_or_default());
    lock.save(
        NewTokens {
            access_token: &AccessToken::new(grant.access_token),
            access_expires_at: Utc::now() + TimeDelta::seconds(grant.expires_in as i64),
            refresh_token: Some(&refresh),
        },
        true,
    )
    .await
    .map_err(anyhow::Error::msg)?;

    let registry = auth::build(&settings, db.pool.clone());
    let executor = Arc::new(Executor::new(Arc::new(settings), registry)?);
    let company = sandbox.roubler.companies()[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let call = CallContext::new("roubler", "bench");
    let issued = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));

    let started = tokio::time::Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (executor, call, issued, failures) =
                (executor.clone(), call.clone(), issued.clone(), failures.clone());
            let scope = ScopeHeader::Company(company.clone());
            tokio::spawn(async move {
                while issued.fetch_add(1, Ordering::SeqCst) < calls {
                    let answer = executor
                        .execute::<Locations>(&call, Service::Default, &scope, json!({}))
                        .await;
                    if let Err(e) = answer {
                        eprintln!("{e}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed();

    let ideal = window.mul_f64(calls as f64 / f64::from(limit));
    let busy = elapsed + window;
    let efficiency = ideal.as_secs_f64() / busy.as_secs_f64();
    let arrivals: Vec<_> = sandbox.roubler.calls().into_iter().map(|c| c.at).collect();
    let sent = arrivals.len();
    let over = over_limit_calls(arrivals, window, limit as usize);
    let learned = executor.learned_limit("roubler");
    println!(
        "rate_learned bench: {calls} calls, {tasks} tasks, configured 100 per 60s, enforced and announced {limit} per {window:?}"
    );
    println!("  learned            {learned:?}");
    println!("  elapsed            {elapsed:.2?} (busy {busy:.2?} with the last window)");
    println!("  ideal              {ideal:.2?}");
    println!(
        "  429 answers        {}",
        sandbox.roubler.rate_limited_responses()
    );
    println!("  calls seen         {sent}");
    println!("  failed calls       {}", failures.load(Ordering::SeqCst));
    println!(
        "  throttled          {:.1} s over all tasks",
        call.figures.throttled_ms() as f64 / 1000.0
    );
    println!("rate_learned efficiency={efficiency:.3} over_limit={over}");
    Ok(())
}
