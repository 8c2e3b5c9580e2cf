//! Every way a run fails that the sandbox can produce is recorded with its kind: in
//! `etl.runs.error_kind`, as `etl.freshness.last_error_kind`, and as the `outcome` label of
//! `reporting_etl_runs_total` (what `/metrics` serves). Each test runs the real runner (or the
//! binary) against the sandbox and real PostgreSQL, with one fault that decides the kind.
//!
//! The runs log inside `run` / `window` / `upstream` spans: the last tests check that the JSON
//! log still carries job, dataset, scope, window and run id on every window event, and that the
//! human format names them once, in the span prefix.

use std::sync::Arc;
use std::time::Duration;

use reporting_etl::auth;
use reporting_etl::executor::{Executor, ExecutorOptions};
use reporting_etl::jobs::runner::{Runner, WindowReport};
use reporting_etl::store::Store;
use reporting_etl::store::runs::{RunStatus, Trigger};
use sandbox::drift::RemovedField;
use sandbox::faults::{FaultPlan, RawAnswer};
use sandbox::{Sandbox, SandboxOptions};
use tokio_util::sync::CancellationToken;

use crate::support::{self, TestDb};

/// Sandbox, database (Roubler authorised) and a runner wired as `run` wires it, with a retry
/// budget of two attempts and millisecond backoff so that "the retries ran out" comes quickly.
pub(crate) struct Harness {
    pub(crate) sandbox: Sandbox,
    pub(crate) db: TestDb,
    pub(crate) runner: Arc<Runner>,
    pub(crate) store: Store,
    pub(crate) file: tempfile::NamedTempFile,
}

pub(crate) async fn harness(options: SandboxOptions, jobs: &str) -> Harness {
    // The process's recorder, as `run` installs it: counts made before it exists are lost.
    reporting_etl::service::install_metrics().expect("the recorder installs");
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let db = TestDb::new().await;
    let (settings, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, jobs));
    support::seed_refresh_chain(&db.pool, "roubler", &sandbox.roubler.grant_tokens(), 3600.0).await;
    let settings = Arc::new(settings);
    let store = Store::open(&settings.database, "test")
        .await
        .expect("store opens");
    let options = ExecutorOptions {
        max_attempts: 2,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(10),
        ..ExecutorOptions::default()
    };
    let executor = Executor::with_options(
        settings.clone(),
        auth::build(&settings, store.pool().clone()),
        options,
    )
    .expect("executor builds");
    let runner = Runner::new(
        settings,
        store.pool().clone(),
        store.instance().id(),
        Arc::new(executor),
        store.job_locks(),
    );
    Harness {
        sandbox,
        db,
        runner: Arc::new(runner),
        store,
        file,
    }
}

/// A job of `dataset` on `source`, never fired by a schedule (the tests run it once).
pub(crate) fn job(name: &str, source: &str, dataset: &str, more: &str) -> String {
    format!(
        "\n[jobs.{name}]\nsource = \"{source}\"\ndataset = \"{dataset}\"\nschedule = \"0 0 0 1 1 *\"\n{more}\n"
    )
}

impl Harness {
    pub(crate) async fn run(&self, job: &str) -> Vec<WindowReport> {
        self.runner
            .run_job(job, Trigger::Once, None, &CancellationToken::new())
            .await
    }

    /// Asserts that `job` (of `dataset`) failed with `kind` and with nothing else: every run
    /// that did not succeed records it, the freshness view shows it as the latest attempt's,
    /// the reports carry it, and the runs counter counts it under `outcome="<kind>"`.
    pub(crate) async fn assert_failed_with(
        &self,
        job: &str,
        dataset: &str,
        reports: &[WindowReport],
        kind: &str,
    ) {
        let failing: Vec<&WindowReport> = reports
            .iter()
            .filter(|r| r.status != RunStatus::Succeeded)
            .collect();
        assert!(!failing.is_empty(), "{job} did not fail: {reports:?}");
        for report in &failing {
            assert_eq!(report.status, RunStatus::Failed, "{report:?}");
            assert_eq!(report.error_kind.map(|k| k.as_str()), Some(kind), "{report:?}");
        }
        let recorded: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT status, error_kind, error FROM etl.runs WHERE job = $1 AND status <> 'succeeded' ORDER BY id",
        )
        .bind(job)
        .fetch_all(&self.db.pool)
        .await
        .expect("runs");
        assert_eq!(recorded.len(), failing.len(), "{recorded:?}");
        for (status, recorded_kind, error) in &recorded {
            assert_eq!(
                (status.as_str(), recorded_kind.as_deref()),
                ("failed", Some(kind)),
                "{error:?}"
            );
        }
        let freshness: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT scope, last_status, last_error_kind FROM etl.freshness WHERE dataset = $1 ORDER BY scope",
        )
        .bind(dataset)
        .fetch_all(&self.db.pool)
        .await
        .expect("freshness");
        assert!(!freshness.is_empty());
        for (scope, status, last_kind) in &freshness {
            assert_eq!(
                (status.as_str(), last_kind.as_deref()),
                ("failed", Some(kind)),
                "scope {scope}"
            );
        }
        let metrics = reporting_etl::service::install_metrics()
            .expect("the recorder installs")
            .render();
        let counted: f64 = metrics
            .lines()
            .filter(|line| {
                line.starts_with("reporting_etl_runs_total{") && line.contains(&format!("job=\"{job}\""))
            })
            .filter(|line| line.contains(&format!("outcome=\"{kind}\"")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(counted, failing.len() as f64, "{metrics}");
        assert!(
            !metrics.contains(&format!("job=\"{job}\",dataset=\"{dataset}\",outcome=\"failed\"")),
            "the bare `failed` outcome is gone: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_through_the_retry_budget_is_rate_limited_and_runs_shows_it() {
    let name = "kinds_rate_limited";
    let h = harness(
        SandboxOptions::default(),
        &job(name, "retarus", "fax_out_udr", "scope = [\"99999\"]"),
    )
    .await;
    let too_many = || RawAnswer::new(429, r#"{"message":"Too Many Requests"}"#);
    h.sandbox.retarus.faults.script(vec![too_many(), too_many()]);
    let reports = h.run(name).await;
    h.assert_failed_with(name, "fax_out_udr", &reports, "rate_limited")
        .await;

    // `reporting-etl runs` has a KIND column with it.
    let mut command = support::binary();
    command.args(["runs", "--config"]).arg(h.file.path());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let header = stdout.lines().next().expect("a header");
    let row = stdout
        .lines()
        .find(|line| line.contains(name))
        .expect("the run is listed");
    let column = |line: &str, at: usize| line.chars().skip(at).take(12).collect::<String>();
    let at = header.find("KIND").expect("a KIND column");
    // Columns are aligned; the row holds the kind where the header says KIND.
    let at = header[..at].chars().count();
    assert_eq!(column(row, at).trim_end(), "rate_limited", "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_daily_quota_is_quota() {
    let name = "kinds_quota";
    let mut options = SandboxOptions::default();
    options.altrata.daily_quota = Some(0);
    let h = harness(options, &job(name, "altrata", "events", "")).await;
    let reports = h.run(name).await;
    h.assert_failed_with(name, "events", &reports, "quota").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_is_reauthorise() {
    let name = "kinds_reauthorise";
    let h = harness(SandboxOptions::default(), &job(name, "roubler", "locations", "")).await;
    // The vendor revoked the authorisation and the access token is spent: the refresh is refused.
    h.sandbox.roubler.revoke_all();
    h.sandbox.roubler.expire_access_tokens();
    sqlx::query(
        "UPDATE etl.tokens SET access_expires_at = now() - interval '1 hour' WHERE source = 'roubler'",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let reports = h.run(name).await;
    h.assert_failed_with(name, "locations", &reports, "reauthorise")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_page_instead_of_json_is_invalid_answer() {
    let name = "kinds_invalid_answer";
    let h = harness(
        SandboxOptions::default(),
        &job(name, "retarus", "fax_out_udr", ""),
    )
    .await;
    h.sandbox.retarus.faults.set(FaultPlan {
        html_rate: 1.0,
        ..FaultPlan::default()
    });
    let reports = h.run(name).await;
    h.assert_failed_with(name, "fax_out_udr", &reports, "invalid_answer")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_the_vendor_removed_is_schema_mismatch() {
    let name = "kinds_schema_mismatch";
    let mut options = SandboxOptions::default();
    options.retarus.removed_fields = vec![RemovedField::new("FaxInUdrReportRecord", "faxId")];
    let h = harness(options, &job(name, "retarus", "fax_in_udr", "")).await;
    let reports = h.run(name).await;
    h.assert_failed_with(name, "fax_in_udr", &reports, "schema_mismatch")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_through_the_retry_budget_are_upstream_unavailable() {
    let name = "kinds_upstream_unavailable";
    let h = harness(
        SandboxOptions::default(),
        &job(name, "retarus", "sms_out_udr", ""),
    )
    .await;
    h.sandbox.retarus.faults.set(FaultPlan {
        server_error_rate: 1.0,
        ..FaultPlan::default()
    });
    let reports = h.run(name).await;
    h.assert_failed_with(name, "sms_out_udr", &reports, "upstream_unavailable")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_slower_than_the_window_deadline_is_timeout() {
    let name = "kinds_timeout";
    let h = harness(
        SandboxOptions::default(),
        &job(
            name,
            "retarus",
            "sms_in_udr",
            "scope = [\"99999\"]\nwindow_deadline_secs = 1",
        ),
    )
    .await;
    h.sandbox.retarus.faults.set(FaultPlan {
        latency: Duration::from_secs(5),
        ..FaultPlan::default()
    });
    let reports = h.run(name).await;
    h.assert_failed_with(name, "sms_in_udr", &reports, "timeout")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_database() {
    let name = "kinds_database";
    let h = harness(
        SandboxOptions::default(),
        &job(name, "retarus", "transactional_email_udr", "scope = [\"99999\"]"),
    )
    .await;
    sqlx::query("ALTER TABLE retarus.transactional_email_udr RENAME TO transactional_email_udr_gone")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let reports = h.run(name).await;
    h.assert_failed_with(name, "transactional_email_udr", &reports, "database")
        .await;
    h.store.close().await.unwrap();
}

/// `run --once` in both log formats: the JSON lines of a window carry job, dataset, scope,
/// window and run id from the spans (flat, next to the message), and the human lines name them
/// in the span prefix instead of on every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_events_carry_the_run_and_window_from_their_spans_in_both_log_formats() {
    // One job per format: each is its first run, so each has a window to load.
    let (name, human) = ("spans_fax", "spans_fax_human");
    let jobs = [name, human].map(|name| job(name, "retarus", "fax_out_udr", "scope = [\"99999\"]"));
    let h = harness(SandboxOptions::default(), &jobs.concat()).await;
    let once = |job: &'static str, format: &'static str| {
        let mut command = support::binary();
        command
            .args(["run", "--once", "--job", job, "--log-format", format, "--config"])
            .arg(h.file.path());
        tokio::task::spawn_blocking(move || command.output())
    };
    let output = once(name, "json").await.unwrap().expect("run --once");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let loaded: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "Window loaded.")
        .collect();
    assert!(!loaded.is_empty(), "{log}");
    for event in &loaded {
        assert_eq!(event["job"], name, "{event}");
        assert_eq!(event["dataset"], "fax_out_udr", "{event}");
        assert_eq!(event["trigger"], "once", "{event}");
        assert_eq!(event["scope"], "99999", "{event}");
        assert!(event["run_id"].as_i64().is_some(), "{event}");
        let window = event["window"].as_str().expect("a window");
        assert!(window.contains('/') && window.ends_with('Z'), "{event}");
        assert!(event["rows"].as_i64().is_some(), "{event}");
    }

    let output = once(human, "human").await.unwrap().expect("run --once");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let line = log
        .lines()
        .find(|line| line.contains("Window loaded.") || line.contains("Left the job's window."))
        .unwrap_or_else(|| panic!("a window line: {log}"));
    assert!(
        // The run span's dataset is recorded once the job is looked up, so it comes last.
        line.contains(&format!(
            "run{{job={human} trigger=once dataset=fax_out_udr}}:window{{scope=99999 window="
        )) && line.contains("run_id="),
        "{line}"
    );
    // Named once, in the prefix: not repeated as the event's own fields.
    assert_eq!(line.matches("job=").count(), 1, "{line}");
    assert_eq!(line.matches("scope=").count(), 1, "{line}");
}

/// The service's own `/metrics` counts a failed window under its kind, and the failing run is
/// recorded with it, as a scheduled run (not only `run --once`) does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_counts_failed_windows_by_kind_on_its_metrics_endpoint() {
    let mut options = SandboxOptions::default();
    options.retarus.removed_fields = vec![RemovedField::new("SmsInUdrReportRecord", "smsId")];
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let extra = format!(
        "\n[jobs.svc_sms]\nsource = \"retarus\"\ndataset = \"sms_in_udr\"\nscope = [\"99999\"]\n\
         schedule = \"*/2 * * * * *\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("service.log");
    let _service = support::spawn_service(file.path(), &log);
    support::wait_until("a failed scheduled window", Duration::from_secs(60), || async {
        support::count_runs(&db.pool, "svc_sms", "failed").await >= 1
    })
    .await;
    let kinds: Vec<Option<String>> =
        sqlx::query_scalar("SELECT error_kind FROM etl.runs WHERE job = 'svc_sms' AND status = 'failed'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        kinds.iter().all(|k| k.as_deref() == Some("schema_mismatch")),
        "{kinds:?}"
    );
    let metrics = support::wait_for("the failure on /metrics", Duration::from_secs(30), || async {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .any(|line| {
                line.starts_with("reporting_etl_runs_total{")
                    && line.contains("job=\"svc_sms\"")
                    && line.contains("outcome=\"schema_mismatch\"")
            })
            .then_some(text)
    })
    .await;
    assert!(
        !metrics.contains("outcome=\"failed\""),
        "no bare `failed` outcome: {metrics}"
    );
}
