//! The operator's day with the real binary: Ctrl-C on a backfill, the progress display on a
//! terminal, the shipped dashboard and dbt sources against what the service really exports.

use crate::support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use sandbox::{Sandbox, SandboxOptions};
use support::TestDb;

fn fax_job() -> String {
    "\n[jobs.fax]\nsource = \"retarus\"\ndataset = \"fax_out_udr\"\nschedule = \"0 0 0 * * *\"\nscope = \"all\"\n"
        .to_owned()
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_on_a_backfill_rolls_back_the_open_window_prints_the_summary_and_exits_130() {
    let sandbox = Sandbox::start(SandboxOptions {
        records_per_day: 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let db = TestDb::new().await;
    let grace_secs = 2;
    let extra = format!("{}\n[server]\nshutdown_grace_secs = {grace_secs}\n", fax_job());
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    let today = chrono::Utc::now().date_naive();
    let from = (today - chrono::Duration::days(120)).to_string();
    let to = today.to_string();
    let backfill = |stdout: Stdio| {
        tokio::process::Command::from(support::binary())
            .args([
                "run", "--once", "--job", "fax", "--from", &from, "--to", &to, "--config",
            ])
            .arg(file.path())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };

    // The first answer is served at once, every later one takes far longer than the grace
    // period: the second window is loading when the signal arrives and cannot commit in time.
    sandbox.retarus.faults.set(sandbox::faults::FaultPlan {
        latency: Duration::from_secs(60),
        ..Default::default()
    });
    sandbox.retarus.faults.script_after(1, Vec::new());
    let mut child = backfill(Stdio::piped());
    support::wait_until(
        "a window committed and the next one loading",
        Duration::from_secs(30),
        || async {
            count(
                &db,
                "SELECT count(*) FILTER (WHERE status = 'succeeded') * count(*) FILTER (WHERE status = 'running') FROM etl.runs",
            )
            .await
                > 0
        },
    )
    .await;
    let committed = count(&db, "SELECT count(*) FROM etl.runs WHERE status = 'succeeded'").await;
    let rows_before = count(&db, "SELECT count(*) FROM retarus.fax_out_udr").await;
    assert!(
        committed >= 1 && rows_before > 0,
        "{committed} windows, {rows_before} rows"
    );

    let signalled = Instant::now();
    signal(&child, "INT");
    let status = tokio::time::timeout(Duration::from_secs(grace_secs + 8), child.wait())
        .await
        .expect("run --once exits after SIGINT")
        .unwrap();
    let stopped_after = signalled.elapsed();
    let mut stdout = String::new();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout)
        .await
        .unwrap();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    println!("stopped {stopped_after:?} after SIGINT (grace {grace_secs} s)\n{stdout}");
    assert_eq!(status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        stopped_after >= Duration::from_secs(grace_secs) - Duration::from_millis(100)
            && stopped_after < Duration::from_secs(grace_secs + 5),
        "stopped {stopped_after:?} after SIGINT with a {grace_secs} s grace period"
    );
    // The summary names every window this process touched, the rolled-back one as interrupted.
    assert!(stdout.contains("window(s)"), "no summary:\n{stdout}");
    assert!(stdout.contains("1 interrupted (rolled back)"), "{stdout}");
    assert!(stderr.contains("SIGINT"), "{stderr}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM etl.runs WHERE status = 'running'").await,
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM etl.runs WHERE status = 'interrupted'").await,
        1
    );
    // Nothing committed before the signal was lost, and nothing of the open window is visible.
    assert_eq!(
        count(&db, "SELECT count(*) FROM etl.runs WHERE status = 'succeeded'").await,
        committed
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM retarus.fax_out_udr").await,
        rows_before
    );
    assert_eq!(
        count(
            &db,
            "SELECT coalesce(sum(rows_written), 0)::bigint FROM etl.runs WHERE status = 'succeeded'"
        )
        .await,
        rows_before
    );

    // Re-running resumes: the committed windows are not loaded again, the rest are.
    sandbox.retarus.faults.clear();
    let resumed = backfill(Stdio::piped()).wait_with_output().await.unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM (SELECT window_start FROM etl.runs WHERE status = 'succeeded'
                                   GROUP BY scope, window_start, window_end HAVING count(*) > 1) doubled"
        )
        .await,
        0,
        "a window committed before the interrupt was loaded again"
    );
    let expected = support::expected_fax_rows(&sandbox, &db.pool).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM retarus.fax_out_udr").await as usize,
        expected
    );
}

/// A fax job firing every two seconds and a `[server]` on a free port (returned too).
fn every_two_seconds_fax_job() -> (u16, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!(
        "\n[jobs.fax]\nsource = \"retarus\"\ndataset = \"fax_out_udr\"\nschedule = \"*/2 * * * * *\"\nscope = \"all\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    (port, extra)
}

/// Starts the service (`run`) with its stderr piped and waits until two windows succeeded.
async fn service_with_two_windows_in(db: &TestDb, config: &std::path::Path) -> tokio::process::Child {
    let child = tokio::process::Command::from(support::binary())
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    support::wait_until("two succeeded windows", Duration::from_secs(30), || async {
        count(db, "SELECT count(*) FROM etl.runs WHERE status = 'succeeded'").await >= 2
    })
    .await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_and_the_scheduler_log_no_driver_or_scheduler_chatter_at_info() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (_, extra) = every_two_seconds_fax_job();
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));

    // The migrations are applied already: PostgreSQL answers "already exists, skipping".
    let migrate = support::binary()
        .args(["migrate", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&migrate.stderr);
    assert!(migrate.status.success(), "{stderr}");
    assert!(!stderr.contains("already exists"), "driver chatter:\n{stderr}");

    let child = service_with_two_windows_in(&db, file.path()).await;
    signal(&child, "TERM");
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the service stops")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let windows = count(&db, "SELECT count(*) FROM etl.runs WHERE status = 'succeeded'").await;
    assert!(windows >= 2, "{stderr}");
    for chatter in ["Job creator", "already exists", "_sqlx_migrations"] {
        assert!(!stderr.contains(chatter), "`{chatter}` at info:\n{stderr}");
    }
    // One line per loaded window (every window of every fire is logged once).
    let loaded = stderr.lines().filter(|l| l.contains("Window loaded.")).count();
    assert_eq!(loaded as i64, windows, "{stderr}");
}

/// The dbt executable: `DBT_BIN` when set, else the virtualenv `scripts/dbt-venv.sh` keeps in
/// `target/dbt-venv`, created by the first test process that needs it (about 45 s of pip on a
/// fresh machine; the script's lock makes other processes wait for it rather than install twice).
fn dbt_binary() -> std::path::PathBuf {
    static DBT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DBT.get_or_init(|| {
        if let Some(path) = std::env::var_os("DBT_BIN") {
            let path = std::path::PathBuf::from(path);
            assert!(path.exists(), "DBT_BIN={} does not exist", path.display());
            return path;
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dbt-venv.sh");
        let started = Instant::now();
        let output = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .expect("run scripts/dbt-venv.sh");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{} could not provide dbt (it needs python3 with venv and pip, and PyPI):\n{stderr}",
            script.display()
        );
        let path = std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        println!(
            "dbt at {} after {:.1?}\n{stderr}",
            path.display(),
            started.elapsed()
        );
        assert!(
            path.exists(),
            "{} printed {}, which does not exist",
            script.display(),
            path.display()
        );
        path
    })
    .clone()
}

fn dbt_source_freshness(dbt: &std::path::Path, project: &std::path::Path) -> std::process::Output {
    std::process::Command::new(dbt)
        .args(["source", "freshness", "--project-dir"])
        .arg(project)
        .arg("--profiles-dir")
        .arg(project)
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .env("DO_NOT_TRACK", "1")
        .output()
        .expect("run dbt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dbt_source_freshness_passes_on_the_generated_sources_and_fails_when_data_goes_stale() {
    // Provisioning dbt (pip, on a fresh machine) overlaps with the load below.
    let dbt = tokio::task::spawn_blocking(dbt_binary);
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &fax_job()));
    let once = support::binary()
        .args(["run", "--once", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    assert!(count(&db, "SELECT count(*) FROM retarus.fax_out_udr").await > 0);

    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir(project.path().join("models")).unwrap();
    let sources = project.path().join("models/sources.yml");
    let written = support::binary()
        .args(["dbt", "sources", "--out"])
        .arg(&sources)
        .arg("--config")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let yaml = std::fs::read_to_string(&sources).unwrap();
    // Descriptions come from the COMMENTs; the daily job allows two days, then four.
    assert!(yaml.contains("When this row was last written."), "{yaml}");
    assert!(
        yaml.contains("warn_after: {count: 2880, period: minute}")
            && yaml.contains("error_after: {count: 5760, period: minute}"),
        "{yaml}"
    );

    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    std::fs::write(
        project.path().join("dbt_project.yml"),
        "name: reporting_etl_check\nversion: \"1.0\"\nconfig-version: 2\nprofile: reporting_etl\n",
    )
    .unwrap();
    std::fs::write(
        project.path().join("profiles.yml"),
        format!(
            "reporting_etl:\n  target: test\n  outputs:\n    test:\n      type: postgres\n      host: \"{}\"\n      port: {}\n      user: \"{}\"\n      password: \"\"\n      dbname: \"{}\"\n      schema: analytics\n      threads: 1\n",
            options.get_host(),
            options.get_port(),
            options.get_username(),
            options.get_database().unwrap()
        ),
    )
    .unwrap();

    let dbt = dbt
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
    let fresh = dbt_source_freshness(&dbt, project.path());
    let fresh_log = String::from_utf8_lossy(&fresh.stdout);
    println!("{fresh_log}");
    assert!(
        fresh.status.success(),
        "{fresh_log}{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    assert!(fresh_log.contains("retarus.fax_out_udr"), "{fresh_log}");

    // Five days without a load: past the four-day error limit of a daily job.
    sqlx::query("UPDATE retarus.fax_out_udr SET _loaded_at = now() - interval '5 days'")
        .execute(&db.pool)
        .await
        .unwrap();
    let stale = dbt_source_freshness(&dbt, project.path());
    let stale_log = String::from_utf8_lossy(&stale.stdout);
    assert!(
        !stale.status.success(),
        "dbt accepted 5-day-old data:\n{stale_log}"
    );
    assert!(stale_log.contains("ERROR STALE"), "{stale_log}");
}

/// Terminal output with escape sequences removed; each line as the terminal leaves it (the text
/// after its last carriage return, since `\r` goes back to the start of the line).
fn visible_lines(raw: &str) -> Vec<String> {
    without_escapes(raw)
        .split('\n')
        .map(|line| {
            line.rsplit('\r')
                .find(|part| !part.trim().is_empty())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// Terminal output with its escape sequences (colours, cursor moves) removed.
fn without_escapes(raw: &str) -> String {
    let mut plain = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // A CSI sequence ends with a byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        plain.push(c);
    }
    plain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_terminal_progress_bars_never_split_a_log_line() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let extra = format!(
        "{}\n[jobs.fax_in]\nsource = \"retarus\"\ndataset = \"fax_in_udr\"\nschedule = \"0 0 0 * * *\"\nscope = \"all\"\n",
        fax_job()
    );
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    // Slow answers keep the bars on screen while windows log their lines.
    sandbox.retarus.faults.set(sandbox::faults::FaultPlan {
        latency: Duration::from_millis(300),
        ..Default::default()
    });
    let today = chrono::Utc::now().date_naive();
    let command = format!(
        "stty cols 150 rows 40; exec {} run --once --from {} --to {today} --config {}",
        env!("CARGO_BIN_EXE_reporting-etl"),
        today - chrono::Duration::days(120),
        file.path().display()
    );
    // `script` runs the command on a pseudo-terminal and copies everything it draws to stdout.
    let mut script = std::process::Command::new("script");
    script
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("RUST_LOG");
    let output = tokio::task::spawn_blocking(move || script.output().unwrap())
        .await
        .unwrap();
    let raw = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{raw}");
    assert!(raw.contains(" windows · "), "no progress bar was drawn:\n{raw}");

    let lines = visible_lines(&raw);
    println!("{}", lines.join("\n"));
    let windows = count(&db, "SELECT count(*) FROM etl.runs WHERE status = 'succeeded'").await;
    let logged: Vec<&String> = lines.iter().filter(|l| l.contains("Window loaded.")).collect();
    assert!(windows >= 4, "{windows} windows");
    assert_eq!(logged.len() as i64, windows, "{raw}");
    for line in logged {
        // Whole: starts with its timestamp, ends with its last field, holds one event.
        assert!(
            line.starts_with(&today.format("%Y-").to_string())
                && line.matches("Window loaded.").count() == 1
                && line.contains(" seconds="),
            "a log line was split or overwritten by the progress display: {line:?}\nin:\n{raw}"
        );
    }
    // Only the bars' own lines are left besides logs and the summary table.
    assert!(lines.iter().any(|l| l.contains("window(s)")), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_terminal_the_progress_bars_show_the_time_calls_waited_for_the_rate_budget() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    // One call per 400 ms: every call after the first of each window waits for the budget.
    let extra = format!(
        "{}\n[sources.retarus.rate_limit]\ncalls = 1\nper_ms = 400\n",
        fax_job()
    );
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    let today = chrono::Utc::now().date_naive();
    let command = format!(
        "stty cols 150 rows 40; exec {} run --once --job fax --from {} --to {today} --config {}",
        env!("CARGO_BIN_EXE_reporting-etl"),
        today - chrono::Duration::days(60),
        file.path().display()
    );
    let mut script = std::process::Command::new("script");
    script
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("RUST_LOG");
    let output = tokio::task::spawn_blocking(move || script.output().unwrap())
        .await
        .unwrap();
    let raw = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{raw}");

    // Every figure the bars drew, in tenths of a second.
    let plain = without_escapes(&raw);
    let shown: Vec<i64> = plain
        .match_indices(" calls · throttled ")
        .filter_map(|(at, matched)| {
            let rest = &plain[at + matched.len()..];
            let (number, _) = rest.split_once('s')?;
            let (seconds, tenths) = number.split_once('.')?;
            Some(seconds.parse::<i64>().ok()? * 10 + tenths.parse::<i64>().ok()?)
        })
        .collect();
    assert!(!shown.is_empty(), "no throttled time was drawn:\n{plain}");
    let (recorded_ms, calls): (i64, i64) = sqlx::query_as(
        "SELECT sum(throttled_ms)::int8, sum(upstream_calls)::int8 FROM etl.runs WHERE job = 'fax' AND status = 'succeeded'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(calls >= 4, "{calls} calls: too few to be throttled");
    // The budget held calls back, and the bars showed it: never more than the runs recorded.
    let most = shown.iter().copied().max().unwrap_or_default();
    assert!(
        recorded_ms >= 400,
        "{recorded_ms} ms throttled over {calls} calls"
    );
    assert!(
        most > 0 && most * 100 <= recorded_ms,
        "bars showed at most {most} tenths of a second; the runs recorded {recorded_ms} ms:\n{plain}"
    );
}

/// The service's metric names (`reporting_etl_…`) a PromQL text mentions.
fn metric_names(promql: &str) -> Vec<String> {
    promql
        .match_indices("reporting_etl_")
        .map(|(at, _)| {
            promql[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_and_alerts_query_only_metrics_the_service_exports() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/reporting-etl.json"
        ))
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut wanted = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            wanted.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    assert!(wanted.len() >= 8, "{wanted:?}");
    // The alert rules too.
    let alerts = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    wanted.extend(metric_names(&alerts));

    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (port, extra) = every_two_seconds_fax_job();
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    // One throttled answer, so the 429 and wait series exist as they would in production.
    sandbox.retarus.faults.script(vec![
        sandbox::faults::RawAnswer::new(429, "slow down").header("retry-after", "1"),
    ]);
    let child = service_with_two_windows_in(&db, file.path()).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    signal(&child, "TERM");
    let output = child.wait_with_output().await.unwrap();
    let exported: std::collections::BTreeSet<String> = metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not export:\n{metrics}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
