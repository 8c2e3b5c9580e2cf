//! A hostile upstream, on every road out: the sandbox's hostile layer replaces parts of real
//! answers — token answers as much as data answers — and each test checks what a user would: the
//! run's record and kind, the rows kept, the token stored, what reached another host.
//!
//! The regression tests name the defect they pin; the property test at the end throws randomly
//! mutated answers at every vendor's token and data paths and checks the invariants after each
//! (`PROPTEST_CASES` sets how many; see `docs/bounds.md`).

use std::time::Duration;

use chrono::Utc;
use reporting_etl::store::runs::RunStatus;
use sandbox::SandboxOptions;
use sandbox::hostile::{Mutation, Target, Trap};
use serde_json::json;

use crate::failure_kinds::{Harness, harness, job};

const MIB: u64 = 1024 * 1024;

/// The process's peak resident memory (`VmHWM`), in MiB.
pub(crate) fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// `(status, error_kind, error)` of every run of `job`, oldest first.
async fn runs_of(h: &Harness, job: &str) -> Vec<(String, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT status, error_kind, error FROM etl.runs WHERE job = $1 ORDER BY id")
        .bind(job)
        .fetch_all(&h.db.pool)
        .await
        .expect("runs")
}

/// A digest of every row of `table` (all columns but the run that wrote them), so "the rows are
/// unchanged" is checked exactly, not by count.
async fn table_digest(h: &Harness, table: &str) -> (i64, String) {
    rows_digest(h, table, "").await
}

/// Row count and digest of the rows of `table` that `filter` (a `WHERE …` or nothing) selects.
pub(crate) async fn rows_digest(h: &Harness, table: &str, filter: &str) -> (i64, String) {
    let query = format!(
        "SELECT count(*), coalesce(md5(string_agg(row_text, '|' ORDER BY row_text)), '')
         FROM (SELECT (to_jsonb(t) - '_run_id' - '_seq')::text AS row_text FROM {table} t {filter}) rows"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(query))
        .fetch_one(&h.db.pool)
        .await
        .expect("digest")
}

/// Defect 1: a token answer of 1000 MiB (chunked) was read whole, six times. Now it is refused
/// once the token body limit is passed, not retried, and the run fails `invalid_answer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_answer_of_a_gigabyte_is_refused_at_the_limit_and_not_retried() {
    let name = "hostile_token_huge";
    let h = harness(
        SandboxOptions::default(),
        &job(name, "retarus", "sms_in_udr", "scope = [\"99999\"]"),
    )
    .await;
    for mutation in [
        Mutation::Huge {
            bytes: 1000 * MIB,
            announced: false,
        },
        Mutation::Endless,
    ] {
        let before = h.sandbox.retarus.hostile.counts().token_answers;
        h.sandbox
            .retarus
            .hostile
            .push(Target::Token, vec![mutation.clone()]);
        let reports = h.run(name).await;
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].status, RunStatus::Failed, "{mutation:?}: {reports:?}");
        assert_eq!(
            reports[0].error_kind.map(|k| k.as_str()),
            Some("invalid_answer"),
            "{mutation:?}: {reports:?}"
        );
        let message = reports[0].error.clone().unwrap_or_default();
        assert!(message.contains("larger than"), "{message}");
        assert_eq!(
            h.sandbox.retarus.hostile.counts().token_answers - before,
            1,
            "{mutation:?}: the token request was repeated"
        );
    }
    assert!(
        peak_rss_mib() < 1000,
        "the test process peaked at {} MiB: a token answer was read whole",
        peak_rss_mib()
    );
    // With an honest answer, the same job loads.
    let reports = h.run(name).await;
    assert!(
        reports.iter().all(|r| r.status == RunStatus::Succeeded),
        "{reports:?}"
    );
}

/// Defect 2: `expires_in` of 10^13 (also `i64::MAX`, the string "1e13") panicked computing the
/// expiry; 10^12 stored an expiry in the year 33715. Now the lifetime is held to a day: the run
/// loads, and the stored expiry is at most a day away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_lifetime_of_ten_trillion_seconds_is_held_to_a_day() {
    for (n, lifetime) in [
        json!(10_000_000_000_000i64),
        json!(i64::MAX),
        json!("1e13"),
        json!(1_000_000_000_000i64),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("hostile_lifetime_{n}");
        let h = harness(
            SandboxOptions::default(),
            &job(&name, "retarus", "sms_in_udr", "scope = [\"99999\"]"),
        )
        .await;
        h.sandbox.retarus.hostile.push(
            Target::Token,
            vec![Mutation::JsonSet {
                pointer: "/expires_in".into(),
                value: lifetime.clone(),
            }],
        );
        let reports = h.run(&name).await;
        assert!(
            reports.iter().all(|r| r.status == RunStatus::Succeeded),
            "expires_in {lifetime}: {reports:?}"
        );
        let (expires,): (chrono::DateTime<Utc>,) =
            sqlx::query_as("SELECT access_expires_at FROM etl.tokens WHERE source = 'retarus'")
                .fetch_one(&h.db.pool)
                .await
                .expect("a stored token");
        let ahead = expires - Utc::now();
        assert!(
            ahead <= chrono::Duration::days(1) && ahead > chrono::Duration::hours(23),
            "expires_in {lifetime}: stored expiry {expires}, {ahead} ahead"
        );
        assert_eq!(
            runs_of(&h, &name)
                .await
                .iter()
                .filter(|(status, ..)| status == "running")
                .count(),
            0
        );
    }
}

/// Defect 3: a panic inside a job left its run `running`. Now the window's run ends `failed`
/// with kind `internal` and the panic's message, the runs counter counts it, and the next run
/// of the job goes on as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_window_is_a_recorded_internal_failure_and_the_next_run_goes_on() {
    let name = "hostile_panic";
    let h = harness(
        SandboxOptions::default(),
        &job(name, "retarus", "sms_in_udr", "scope = [\"99999\"]"),
    )
    .await;
    reporting_etl::jobs::runner::panic_in_next_window(name);
    let reports = h.run(name).await;
    h.assert_failed_with(name, "sms_in_udr", &reports, "internal")
        .await;
    let runs = runs_of(&h, name).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let error = runs[0].2.clone().unwrap_or_default();
    assert!(
        error.contains("panicked") && error.contains("injected panic in a window of job hostile_panic"),
        "{error}"
    );
    let reports = h.run(name).await;
    assert!(
        reports.iter().all(|r| r.status == RunStatus::Succeeded),
        "the run after the panic: {reports:?}"
    );
}

/// Defect 4: a redirect from the token endpoint was retried 6 times and recorded
/// `upstream_unavailable`. Now it fails at once as `upstream_rejected`, as on a data call, and
/// nothing — no credential — reaches the host it points to. For a client-credentials token
/// (Retarus, Altrata) and a refresh (Roubler).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_the_token_endpoint_is_rejected_at_once_and_reaches_nothing() {
    let trap = Trap::start().await.expect("trap starts");
    let jobs = [
        (
            "hostile_redirect_retarus",
            "retarus",
            "sms_in_udr",
            "scope = [\"99999\"]",
        ),
        ("hostile_redirect_altrata", "altrata", "events", ""),
        ("hostile_redirect_roubler", "roubler", "locations", ""),
    ];
    let config: String = jobs
        .iter()
        .map(|(name, source, dataset, more)| job(name, source, dataset, more))
        .collect();
    let h = harness(SandboxOptions::default(), &config).await;
    // The seeded Roubler token is spent: its first call must refresh.
    sqlx::query(
        "UPDATE etl.tokens SET access_expires_at = now() - interval '1 hour' WHERE source = 'roubler'",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    for (name, source, ..) in jobs {
        let hostile = match source {
            "retarus" => &h.sandbox.retarus.hostile,
            "altrata" => &h.sandbox.altrata.hostile,
            _ => &h.sandbox.roubler.hostile,
        };
        let before = hostile.counts().token_answers;
        hostile.push(
            Target::Token,
            vec![Mutation::Redirect {
                location: trap.url.clone(),
            }],
        );
        let reports = h.run(name).await;
        assert!(!reports.is_empty(), "{name}");
        for report in &reports {
            assert_eq!(report.status, RunStatus::Failed, "{name}: {report:?}");
            assert_eq!(
                report.error_kind.map(|k| k.as_str()),
                Some("upstream_rejected"),
                "{name}: {report:?}"
            );
            let error = report.error.clone().unwrap_or_default();
            assert!(error.contains("redirects are not followed"), "{name}: {error}");
        }
        assert_eq!(
            hostile.counts().token_answers - before,
            1,
            "{name}: the redirected token request was repeated"
        );
    }
    assert_eq!(
        trap.requests(),
        Vec::new(),
        "a request reached the redirect's host"
    );
    // The refused refresh left Roubler's authorisation usable: the next run refreshes and loads.
    let reports = h.run("hostile_redirect_roubler").await;
    assert!(
        reports.iter().all(|r| r.status == RunStatus::Succeeded),
        "{reports:?}"
    );
}

/// Defect 6: an answer for customer 88888's window that held customer 99999's records was stored
/// under 88888. Now a record naming another scope fails the window `invalid_answer`, and the
/// window's previous rows stay exactly as they were. Retarus (customer) and Roubler (location).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_another_scope_fail_the_window_and_keep_its_rows() {
    let retarus = "hostile_scope_retarus";
    let roubler = "hostile_scope_roubler";
    let altrata = "hostile_scope_altrata";
    let config = job(
        retarus,
        "retarus",
        "sms_in_udr",
        "scope = [\"88888\"]\nwindow = \"trailing\"\ntrailing_days = 3",
    ) + &job(
        roubler,
        "roubler",
        "timesheets",
        "window = \"trailing\"\ntrailing_days = 3",
    ) + &job(altrata, "altrata", "profiles", "");
    let h = harness(SandboxOptions::default(), &config).await;
    for (name, table, hostile, pointer, foreign) in [
        (
            retarus,
            "retarus.sms_in_udr",
            &h.sandbox.retarus.hostile,
            "/data/smsInUdrReport/content/0/customerId",
            json!("99999"),
        ),
        (
            roubler,
            "roubler.timesheets",
            &h.sandbox.roubler.hostile,
            "/data/timesheets/0/location/id",
            json!("another-location"),
        ),
        (
            altrata,
            "altrata.profiles",
            &h.sandbox.altrata.hostile,
            "/data/personIdSearch/altrataId",
            json!("1-per-999999"),
        ),
    ] {
        let reports = h.run(name).await;
        assert!(
            reports.iter().all(|r| r.status == RunStatus::Succeeded),
            "{reports:?}"
        );
        let before = table_digest(&h, table).await;
        assert!(before.0 > 0, "{table} loaded no rows to keep");
        // Every data answer of the next run names another scope in its first record.
        hostile.always(
            Target::Data,
            vec![Mutation::JsonSet {
                pointer: pointer.into(),
                value: foreign.clone(),
            }],
        );
        let reports = h.run(name).await;
        hostile.always(Target::Data, Vec::new());
        let failed: Vec<_> = reports
            .iter()
            .filter(|r| r.status != RunStatus::Succeeded)
            .collect();
        assert!(
            !failed.is_empty(),
            "{name}: a foreign record was stored: {reports:?}"
        );
        for report in failed {
            assert_eq!(report.status, RunStatus::Failed, "{report:?}");
            assert_eq!(
                report.error_kind.map(|k| k.as_str()),
                Some("invalid_answer"),
                "{report:?}"
            );
            let error = report.error.clone().unwrap_or_default();
            assert!(
                error.contains("records of") || error.contains("it answered with"),
                "{error}"
            );
        }
        assert_eq!(table_digest(&h, table).await, before, "{table} changed");
    }
}

/// Defect 7: an outcome written after a database outage was stamped with the time it was
/// written, so the run seemed to hold its window until then. Now `finished_at` is when the
/// window ended in the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_recorded_late_keeps_the_time_its_window_ended() {
    use reporting_etl::store::runs::{self, NewRun, RunFigures, Trigger};
    let name = "hostile_finished_at";
    let h = harness(
        SandboxOptions::default(),
        &job(name, "retarus", "sms_in_udr", "scope = [\"99999\"]"),
    )
    .await;
    let run = NewRun {
        job: name,
        source: "retarus",
        dataset: "sms_in_udr",
        scope: "99999",
        window: None,
        trigger: Trigger::Once,
    };
    let id = runs::start(h.store.pool(), h.store.instance().id(), &run)
        .await
        .expect("run starts");
    let ended = Utc::now();
    // The outcome reaches the database 3 s after the window ended (as after an outage).
    tokio::time::sleep(Duration::from_secs(3)).await;
    runs::finish(
        h.store.pool(),
        id,
        RunStatus::Failed,
        &RunFigures::default(),
        Some((
            reporting_etl::failure::FailureKind::Database,
            "the database went away",
        )),
        ended,
    )
    .await
    .expect("recorded");
    let recorded = runs::get(h.store.pool(), id).await.expect("the run");
    let finished = recorded.finished_at.expect("finished");
    assert!(
        (finished - ended).abs() < chrono::Duration::milliseconds(1),
        "finished_at {finished}, the window ended at {ended}"
    );
}

/// A value the upstream sent that its column cannot hold (a timestamp in year 0: PostgreSQL has
/// none) fails the window as `invalid_answer` — the answer is at fault, not the database — and
/// keeps the window's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_no_column_can_hold_is_an_invalid_answer_and_keeps_the_rows() {
    let name = "hostile_year_zero";
    let h = harness(
        SandboxOptions::default(),
        &job(
            name,
            "retarus",
            "sms_in_udr",
            "scope = [\"99999\"]\nwindow = \"trailing\"\ntrailing_days = 3",
        ),
    )
    .await;
    let reports = h.run(name).await;
    assert!(
        reports.iter().all(|r| r.status == RunStatus::Succeeded),
        "{reports:?}"
    );
    let before = table_digest(&h, "retarus.sms_in_udr").await;
    h.sandbox.retarus.hostile.push(
        Target::Data,
        vec![Mutation::JsonSet {
            pointer: "/data/smsInUdrReport/content/0/receivedTs".into(),
            value: json!("0000-06-01T00:00:00Z"),
        }],
    );
    let reports = h.run(name).await;
    h.assert_failed_with(name, "sms_in_udr", &reports, "invalid_answer")
        .await;
    assert_eq!(table_digest(&h, "retarus.sms_in_udr").await, before);
}

/// A token endpoint that refuses for its rate, or is down, says when to ask again as a data
/// answer does, in the same dialects: `Retry-After` on a 429 or a 503, or (no `Retry-After`) the
/// reset of the rate-limit window a 429 was refused in. The executor waits that long before it
/// asks again, not its own backoff (milliseconds in this harness): a token road that retried at
/// once would spend the vendor's patience, the defect a data call's `Retry-After` was fixed for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_asking_to_wait_is_asked_again_only_after_the_wait_in_every_dialect() {
    let header = |name: &str, value: &str| Mutation::Header {
        name: name.into(),
        value: Some(value.into()),
    };
    let dialects = [
        (
            "429 with Retry-After",
            vec![Mutation::Status(429), header("Retry-After", "1")],
        ),
        (
            "503 with Retry-After",
            vec![Mutation::Status(503), header("Retry-After", "1")],
        ),
        (
            "429 with a rate-limit reset",
            vec![
                Mutation::Status(429),
                header("RateLimit-Limit", "10"),
                header("RateLimit-Remaining", "0"),
                header("RateLimit-Reset", "1"),
            ],
        ),
    ];
    for (dialect, mutations) in dialects {
        let name = "hostile_token_wait";
        let h = harness(
            SandboxOptions::default(),
            &job(name, "retarus", "sms_in_udr", "scope = [\"99999\"]"),
        )
        .await;
        h.sandbox.retarus.hostile.push(Target::Token, mutations);
        let started = std::time::Instant::now();
        let reports = h.run(name).await;
        let took = started.elapsed();
        assert!(
            !reports.is_empty() && reports.iter().all(|r| r.status == RunStatus::Succeeded),
            "{dialect}: the run loads once the token endpoint answers: {reports:?}"
        );
        assert_eq!(
            h.sandbox.retarus.hostile.counts().token_answers,
            2,
            "{dialect}: one refused token request, then one that succeeded"
        );
        assert!(
            took >= Duration::from_millis(950),
            "{dialect}: the token was asked for again after {took:?}, before the 1 s the endpoint asked for"
        );
    }
}
