//! Header-learned rate limits, one vendor dialect at a time (issue 26): the sandbox's Roubler
//! enforces a limit (default 10 calls per 2 s) and tells it only in its headers, in each of the
//! dialects real APIs use — the reset as delay seconds, as epoch seconds or as an HTTP date
//! (every whole-second value rounded up), the IETF `RateLimit-*`/`RateLimit` fields with
//! `RateLimit-Policy`; windows fixed to the first call, fixed to the clock, or sliding. Each
//! dialect runs twice: **learned** (the configuration says Roubler's documented 100 per 60 s, so
//! limit and window must come from the headers) and **configured** (the configuration states the
//! vendor's limit; the headers must not make it worse).
//!
//! Efficiency = ideal ÷ busy time, where ideal = calls ÷ limit × window and the busy time runs
//! from the first call until the last one has left its window (elapsed + window): a client that
//! spends every window's whole budget scores 1.0. Over-limit calls are counted in every sliding
//! window of the vendor's length (stricter than a fixed window counts), except for a vendor with
//! windows on the clock, which refills at each boundary: there they are counted in its windows.
//! 429s are counted by the vendor.
//!
//! A plain `main` (`harness = false`); the work is bounded by the limit, not by CPU:
//! `cargo bench --profile dev --bench rate_learned`. Knobs: `BENCH_WINDOWS` (windows' worth of
//! calls per run, default 10), `BENCH_LIMIT` (default 10), `BENCH_WINDOW_MS` (default 2000),
//! `BENCH_TASKS` (concurrent callers, default 4), `BENCH_DIALECTS` (comma-separated names, default
//! all), `BENCH_TRACE` (set: every call as the vendor saw it, on stderr). One line per dialect and mode, then the last line
//! `rate_learned efficiency=<min over dialects> over_limit=<sum>` (over both modes).

#[path = "../tests/it/support/mod.rs"]
mod support;

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{authorise_roubler, knob, over_limit_calls, spend};
use reporting_etl::auth;
use reporting_etl::executor::Executor;
use sandbox::ratelimit::{HeaderFamily, ResetFormat, WindowKind};
use sandbox::roubler::RateLimitMode;
use sandbox::{Sandbox, SandboxOptions};

/// A vendor dialect: how its window runs, how it writes the reset, which headers it uses.
struct Dialect {
    name: &'static str,
    kind: WindowKind,
    reset: ResetFormat,
    family: HeaderFamily,
}

const DIALECTS: &[Dialect] = &[
    Dialect {
        name: "delta-seconds",
        kind: WindowKind::FromFirstCall,
        reset: ResetFormat::Seconds,
        family: HeaderFamily::XRateLimit,
    },
    Dialect {
        name: "epoch-seconds",
        kind: WindowKind::FromFirstCall,
        reset: ResetFormat::EpochSeconds,
        family: HeaderFamily::XRateLimit,
    },
    Dialect {
        name: "http-date-clock",
        kind: WindowKind::Clock,
        reset: ResetFormat::HttpDate,
        family: HeaderFamily::XRateLimit,
    },
    Dialect {
        name: "epoch-clock",
        kind: WindowKind::Clock,
        reset: ResetFormat::EpochSeconds,
        family: HeaderFamily::XRateLimit,
    },
    Dialect {
        name: "delta-sliding",
        kind: WindowKind::Sliding,
        reset: ResetFormat::Seconds,
        family: HeaderFamily::XRateLimit,
    },
    Dialect {
        name: "ietf-policy",
        kind: WindowKind::FromFirstCall,
        reset: ResetFormat::Seconds,
        family: HeaderFamily::Ietf,
    },
    Dialect {
        name: "ietf-structured-sliding",
        kind: WindowKind::Sliding,
        reset: ResetFormat::Seconds,
        family: HeaderFamily::IetfStructured,
    },
];

/// What one run measured.
struct Measured {
    efficiency: f64,
    over_limit: usize,
    over_429: u64,
    failures: usize,
}

async fn run(
    dialect: &Dialect,
    configured: bool,
    limit: u32,
    window: Duration,
    calls: usize,
    tasks: usize,
) -> anyhow::Result<Measured> {
    let mut options = SandboxOptions::default();
    options.roubler.rate_limit = limit;
    options.roubler.rate_window = window;
    options.roubler.rate_mode = RateLimitMode::Enforcing;
    options.roubler.rate_window_kind = dialect.kind;
    options.roubler.rate_reset_format = dialect.reset;
    options.roubler.rate_header_family = dialect.family;
    let sandbox = Sandbox::start(options).await?;
    let db = support::TestDb::new().await;
    // Learned: no `rate_limit` for Roubler, so the documented default (100 per 60 s) applies.
    let extra = if configured {
        format!(
            "\n[sources.roubler.rate_limit]\ncalls = {limit}\nper_ms = {}\n",
            window.as_millis()
        )
    } else {
        String::new()
    };
    let (settings, _file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    authorise_roubler(&sandbox, &db.pool).await?;
    let registry = auth::build(&settings, db.pool.clone());
    let executor = Arc::new(Executor::new(Arc::new(settings), registry)?);

    let spent = spend(&executor, &sandbox, calls, tasks).await?;
    let ideal = window.mul_f64(calls as f64 / f64::from(limit));
    let busy = spent.elapsed + window;
    let records = sandbox.roubler.calls();
    if std::env::var_os("BENCH_TRACE").is_some() {
        // Each call as the vendor saw it: milliseconds into the vendor's window, refused or not.
        let window_ms = window.as_millis().max(1) as i64;
        for record in &records {
            let ms = record.utc.timestamp_millis();
            eprintln!(
                "    call window={} at_ms={} {}",
                ms.div_euclid(window_ms),
                ms.rem_euclid(window_ms),
                if record.allowed { "ok" } else { "429" }
            );
        }
    }
    // Over the limit as the vendor counts: in its clock windows for a clock-aligned vendor
    // (which refills at each boundary, so a client following it may put two budgets into one
    // sliding window), else in every sliding window (stricter than a fixed window counts).
    let over_limit = if dialect.kind == WindowKind::Clock {
        let window_us = window.as_micros().max(1) as i64;
        let mut per_window = std::collections::BTreeMap::<i64, usize>::new();
        for record in &records {
            *per_window
                .entry(record.utc.timestamp_micros().div_euclid(window_us))
                .or_default() += 1;
        }
        per_window
            .values()
            .map(|n| n.saturating_sub(limit as usize))
            .sum()
    } else {
        over_limit_calls(records.iter().map(|c| c.at).collect(), window, limit as usize)
    };
    let measured = Measured {
        efficiency: ideal.as_secs_f64() / busy.as_secs_f64(),
        over_limit,
        over_429: sandbox.roubler.rate_limited_responses(),
        failures: spent.failures,
    };
    eprintln!(
        "  {} {}: {calls} calls in {:.2?}, learned {:?}",
        dialect.name,
        if configured { "configured" } else { "learned" },
        spent.elapsed,
        executor.learned_limit("roubler")
    );
    Ok(measured)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let windows = knob("BENCH_WINDOWS", 10) as usize;
    let limit = knob("BENCH_LIMIT", 10) as u32;
    let window = Duration::from_millis(knob("BENCH_WINDOW_MS", 2000));
    let tasks = knob("BENCH_TASKS", 4) as usize;
    let only = std::env::var("BENCH_DIALECTS").unwrap_or_default();
    let calls = windows * limit as usize;
    println!(
        "rate_learned bench: per dialect {calls} calls from {tasks} tasks against an enforced {limit} per {window:?}; \
         learned = configured 100 per 60 s, configured = {limit} per {window:?}"
    );
    let mut worst = f64::INFINITY;
    let mut over_total = 0;
    for dialect in DIALECTS {
        if !only.is_empty() && !only.split(',').any(|name| name == dialect.name) {
            continue;
        }
        for configured in [false, true] {
            let measured = run(dialect, configured, limit, window, calls, tasks).await?;
            println!(
                "rate_learned dialect={} mode={} efficiency={:.3} over_limit={} over_429={} failed={}",
                dialect.name,
                if configured { "configured" } else { "learned" },
                measured.efficiency,
                measured.over_limit,
                measured.over_429,
                measured.failures
            );
            worst = worst.min(measured.efficiency);
            over_total += measured.over_limit + measured.over_429 as usize;
        }
    }
    println!("rate_learned efficiency={worst:.3} over_limit={over_total}");
    Ok(())
}
