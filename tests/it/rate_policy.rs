//! A learned rate-limit policy is evidence, not law (issue 26): one answer naming a window far
//! beyond `rate_budget.max_wait_secs` (`RateLimit-Policy: 1;w=86400`, or `w=10^12`) fails the
//! window that met it, naming the header, holds the source for the cap only — in every process
//! sharing the budget — and the next answer finds the budget as it was. Before, it stored
//! "1 per 86,400,000 ms" in `etl.rate_budgets` and every window of the source, in every process,
//! failed without an upstream call for a day.

use std::sync::Arc;
use std::time::Duration;

use reporting_etl::auth;
use reporting_etl::executor::{CallContext, CallFailure, Executor, ExecutorOptions, ScopeHeader, Service};
use sandbox::faults::RawAnswer;
use sandbox::{Sandbox, SandboxOptions};
use serde_json::json;

use crate::support::{self, TestDb};

const CAP: &str = "\n[rate_budget]\nmax_wait_secs = 2\n";

/// A Roubler answer that carries data and a policy naming `window` seconds for one call.
fn policy_answer(window: &str) -> RawAnswer {
    RawAnswer::json(r#"{"data":{"locations":[]}}"#).header("RateLimit-Policy", &format!("1;w={window}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_naming_a_day_or_more_fails_one_call_holds_the_source_for_the_cap_and_teaches_nothing() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.expect("sandbox");
    let db = TestDb::new().await;
    let (settings, _file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, CAP));
    support::seed_refresh_chain(&db.pool, "roubler", &sandbox.roubler.grant_tokens(), 3600.0).await;
    let registry = auth::build(&settings, db.pool.clone());
    let executor =
        Executor::with_options(Arc::new(settings), registry, ExecutorOptions::default()).expect("executor");
    let company = ScopeHeader::Company(
        sandbox.roubler.companies()[0]["id"]
            .as_str()
            .expect("company id")
            .to_owned(),
    );
    let locations = |call: CallContext| {
        let (executor, company) = (&executor, company.clone());
        async move {
            executor
                .execute_raw(
                    &call,
                    Service::DEFAULT,
                    &company,
                    "query { locations { id } }",
                    json!({}),
                )
                .await
        }
    };
    // A normal answer first: the budget the sandbox's headers teach.
    locations(CallContext::new("roubler", "locations"))
        .await
        .expect("a normal call");
    let before = executor.learned_limit("roubler").expect("source");

    for (window, shown) in [
        ("86400", "1;w=86400"),
        ("1000000000000", "1;w=31536000 (or more)"),
    ] {
        sandbox.roubler.faults.script(vec![policy_answer(window)]);
        let started = std::time::Instant::now();
        let error = locations(CallContext::new("roubler", "locations"))
            .await
            .expect_err("the call that met the policy fails");
        let message = error.to_string();
        println!(
            "RateLimit-Policy: 1;w={window}: failed after {:?}: {message}",
            started.elapsed()
        );
        assert!(
            matches!(error.failure, CallFailure::WaitCapped { .. }),
            "{error:?}"
        );
        assert!(
            message.contains(&format!("RateLimit-Policy: {shown}"))
                && message.contains("max_wait_secs (2 s)"),
            "the error names the header, its value and the cap: {message}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "failed at once");
        assert_eq!(
            executor.learned_limit("roubler").expect("source").limit,
            before.limit,
            "the policy taught nothing"
        );

        // Held for the cap, no longer: the next call is the probe, and it works.
        let started = std::time::Instant::now();
        locations(CallContext::new("roubler", "locations"))
            .await
            .expect("the source works again within the cap");
        let waited = started.elapsed();
        println!("  the next call went after {waited:?}");
        assert!(waited >= Duration::from_millis(1500), "held back: {waited:?}");
        assert!(
            waited <= Duration::from_secs(3),
            "held back for the cap only: {waited:?}"
        );
    }
    assert_eq!(
        executor.wait_capped_sources(Duration::from_secs(60)).len(),
        1,
        "/readyz shows it"
    );
}

/// Two `run --once` processes on one database: the first meets the policy; the second, started
/// right after, works within the cap. The budget row never holds anything beyond the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_long_policy_met_by_one_process_holds_every_process_for_the_cap_only() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.expect("sandbox");
    let db = TestDb::new().await;
    let job = "\n[jobs.fax]\nsource = \"retarus\"\ndataset = \"fax_out_udr\"\nschedule = \"0 0 0 * * *\"\nscope = \"all\"\nlookback_minutes = 0\n";
    let (_, file) = support::load_config(&support::sandbox_config(
        &sandbox,
        &db.url,
        &format!("{CAP}{job}"),
    ));
    let today = chrono::Utc::now().date_naive();
    let run = |from: chrono::NaiveDate, to: chrono::NaiveDate| {
        let mut command = tokio::process::Command::from(support::binary());
        command
            .args([
                "run",
                "--once",
                "--job",
                "fax",
                "--from",
                &from.to_string(),
                "--to",
                &to.to_string(),
                "--config",
            ])
            .arg(file.path());
        command
    };
    sandbox.retarus.faults.script(vec![
        RawAnswer::new(429, r#"{"errors":[{"message":"slow down"}]}"#)
            .header("content-type", "application/json")
            .header("RateLimit-Policy", "1;w=86400"),
    ]);
    let first = run(today - chrono::Days::new(3), today - chrono::Days::new(1))
        .output()
        .await
        .expect("first process");
    let failed: Vec<(String,)> = sqlx::query_as("SELECT error FROM etl.runs WHERE status = 'failed'")
        .fetch_all(&db.pool)
        .await
        .expect("runs");
    println!(
        "first process: {}{}; failed runs: {failed:?}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(failed.len(), 1, "exactly the window that met the policy failed");
    assert!(
        failed[0].0.contains("RateLimit-Policy: 1;w=86400") && failed[0].0.contains("max_wait_secs (2 s)"),
        "{failed:?}"
    );
    let (beyond,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM etl.rate_budgets
         WHERE blocked_until > now() + interval '2 seconds'
            OR announced_window_ms IS NOT NULL
            OR announced_limit IS NOT NULL
            OR EXISTS (SELECT 1 FROM unnest(slots) AS t WHERE t > now() + interval '1 hour')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("budget");
    assert_eq!(
        beyond, 0,
        "nothing beyond its bound is stored, and the policy taught nothing"
    );

    // Another process, right away: held for what is left of the cap, then it works.
    let started = std::time::Instant::now();
    let second = run(today - chrono::Days::new(1), today)
        .output()
        .await
        .expect("second process");
    let took = started.elapsed();
    let (ok, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed') FROM etl.runs",
    )
    .fetch_one(&db.pool)
    .await
    .expect("runs");
    println!(
        "second process in {took:?}: succeeded {ok}, failed {failed}: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(failed, 1, "only the first process's window failed");
    assert!(ok >= 2, "both processes loaded their other windows");
    let runs = support::binary()
        .args(["runs", "--config"])
        .arg(file.path())
        .output()
        .expect("runs");
    let shown = String::from_utf8_lossy(&runs.stdout);
    assert!(
        shown.contains("RateLimit-Policy: 1;w=86400"),
        "`runs` shows it: {shown}"
    );
}
