//! The raw archive and rebuilds (issue 29), against the sandbox and real PostgreSQL: a load keeps
//! every answer it used, committed with its window; a rebuild re-derives the tables from those
//! answers with no upstream call, byte for byte, or with a changed mapping's column only; a
//! killed load leaves no answers; retention deletes exactly what is older than `keep_days`; a
//! window whose load kept no archive fails its rebuild by name and keeps its rows.

use std::collections::BTreeMap;
use std::time::Duration;

use reporting_etl::datasets::sink::Remap;
use reporting_etl::failure::FailureKind;
use reporting_etl::jobs::runner::{self, WindowReport};
use reporting_etl::store::runs::{RunStatus, Trigger};
use reporting_etl::vendors::CATALOG;
use sandbox::{Sandbox, SandboxOptions};
use tokio_util::sync::CancellationToken;

use crate::failure_kinds::{Harness, harness, job};
use crate::support::{self, TestDb};

/// Every upstream request every sandbox vendor has seen (data and token alike).
fn upstream_requests(sandbox: &Sandbox) -> [(&'static str, u64); 4] {
    [
        (
            "retarus",
            sandbox.retarus.graphql_calls() + sandbox.retarus.token_requests(),
        ),
        ("roubler", sandbox.roubler.calls().len() as u64),
        (
            "altrata",
            sandbox.altrata.call_log().len() as u64 + sandbox.altrata.tokens_issued(),
        ),
        ("retently", sandbox.retently.calls().len() as u64),
    ]
}

/// A table's data columns (the load bookkeeping `_run_id` and `_loaded_at` aside), in order.
async fn data_columns(db: &TestDb, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema || '.' || table_name = $1 AND column_name NOT IN ('_run_id', '_loaded_at') \
         ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Every row of `table` as PostgreSQL prints it (data columns only), sorted.
async fn table_text(db: &TestDb, table: &str) -> Vec<String> {
    let columns = data_columns(db, table).await.join(", ");
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT r::text FROM (SELECT {columns} FROM {table}) r ORDER BY 1"
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn assert_all_succeeded(reports: &[WindowReport]) {
    assert!(!reports.is_empty());
    for report in reports {
        assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    }
}

async fn run(h: &Harness, jobs: &[String], trigger: Trigger, days: u64) -> Vec<WindowReport> {
    let today = chrono::Utc::now().date_naive();
    let range = (trigger != Trigger::Rebuild).then(|| (today - chrono::Days::new(days), today));
    runner::run_once(
        h.runner.clone(),
        jobs.to_vec(),
        trigger,
        range,
        CancellationToken::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_then_a_rebuild_gives_byte_identical_tables_for_every_dataset_of_every_vendor() {
    let mut options = SandboxOptions::default();
    options.altrata.rate_per_sec = 1000.0;
    options.altrata.burst = 1000;
    let mut jobs = String::new();
    let mut names = Vec::new();
    for dataset in CATALOG {
        let name = format!("archive_{}_{}", dataset.kind.as_str(), dataset.name);
        jobs.push_str(&job(&name, dataset.kind.as_str(), dataset.name, ""));
        names.push(name);
    }
    let h = harness(options, &jobs).await;
    let loads = run(&h, &names, Trigger::Backfill, 7).await;
    assert_all_succeeded(&loads);
    let mut loaded = BTreeMap::new();
    for dataset in CATALOG {
        loaded.insert(dataset.table, table_text(&h.db, dataset.table).await);
    }
    let total: usize = loaded.values().map(Vec::len).sum();
    assert!(total > 100, "the loads wrote {total} rows");
    // Every window committed its answers, and only they.
    let (windows, pages) = (
        count(&h.db, "SELECT count(*) FROM archive.windows").await,
        count(&h.db, "SELECT count(*) FROM archive.pages").await,
    );
    assert_eq!(
        windows,
        loads.len() as i64,
        "one archived window per window loaded"
    );
    assert_eq!(
        count(
            &h.db,
            "SELECT count(*) FROM etl.runs r JOIN archive.windows w ON w.run_id = r.id \
             WHERE r.status = 'succeeded' AND w.pages = r.pages AND w.pages = \
             (SELECT count(*) FROM archive.pages p WHERE p.run_id = w.run_id)"
        )
        .await,
        windows,
        "each archived window holds as many answers as its run read pages"
    );
    println!(
        "{} windows loaded, {total} rows, {pages} answers archived",
        loads.len()
    );

    let before = upstream_requests(&h.sandbox);
    let rebuilds = run(&h, &names, Trigger::Rebuild, 0).await;
    assert_all_succeeded(&rebuilds);
    assert_eq!(rebuilds.len(), loads.len(), "every loaded window was rebuilt");
    assert!(rebuilds.iter().all(|r| r.calls == 0), "{rebuilds:?}");
    assert_eq!(
        upstream_requests(&h.sandbox),
        before,
        "no vendor was asked anything"
    );
    assert_eq!(
        count(&h.db, "SELECT count(*) FROM etl.runs WHERE trigger = 'rebuild' AND status = 'succeeded' AND upstream_calls = 0").await,
        loads.len() as i64
    );
    for dataset in CATALOG {
        let rebuilt = table_text(&h.db, dataset.table).await;
        assert!(
            rebuilt == loaded[dataset.table],
            "{} differs after the rebuild ({} rows loaded, {} rebuilt)",
            dataset.table,
            loaded[dataset.table].len(),
            rebuilt.len()
        );
        // The rows are the rebuild's, not the load's left in place.
        let by_load = count(
            &h.db,
            &format!(
                "SELECT count(*) FROM {} WHERE _run_id NOT IN (SELECT id FROM etl.runs WHERE trigger = 'rebuild')",
                dataset.table
            ),
        )
        .await;
        assert_eq!(by_load, 0, "{} still holds rows of the load", dataset.table);
    }
    // A rebuild archives nothing new, and freshness is the loads' (a rebuild makes nothing fresher).
    assert_eq!(
        count(&h.db, "SELECT count(*) FROM archive.windows").await,
        windows
    );
    assert_eq!(
        count(
            &h.db,
            "SELECT count(*) FROM etl.freshness f JOIN etl.runs r ON r.id = \
             (SELECT run_id FROM etl.latest_success s WHERE s.source = f.source AND s.dataset = f.dataset \
              AND s.scope = f.scope) WHERE r.trigger = 'rebuild'"
        )
        .await,
        0
    );
    assert!(
        count(
            &h.db,
            "SELECT count(*) FROM etl.freshness WHERE archive_bytes > 0"
        )
        .await
            > 0
    );
}

/// The changed mapping of the test below: `billed_country` derived with a suffix.
fn billed_country_v2(field: &str) -> String {
    if field == "\\N" {
        field.to_owned()
    } else {
        format!("{field} (v2)")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mapping_change_followed_by_a_rebuild_changes_only_the_derived_column() {
    let name = "archive_remap_fax";
    let h = harness(
        SandboxOptions::default(),
        &job(name, "retarus", "fax_out_udr", "scope = \"all\""),
    )
    .await;
    let jobs = vec![name.to_owned()];
    assert_all_succeeded(&run(&h, &jobs, Trigger::Backfill, 5).await);
    let columns = data_columns(&h.db, "retarus.fax_out_udr").await;
    let rows = |db: &TestDb| {
        let select = columns.join(", ");
        let pool = db.pool.clone();
        async move {
            let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT customer_id || '/' || fax_id, to_jsonb(r) FROM (SELECT {select} FROM retarus.fax_out_udr) r"
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            rows.into_iter().collect::<BTreeMap<_, _>>()
        }
    };
    let before = rows(&h.db).await;
    assert!(before.len() > 10, "{} rows", before.len());
    let calls = upstream_requests(&h.sandbox);

    runner::remap_column(
        name,
        Remap {
            table: "retarus.fax_out_udr",
            column: "billed_country",
            derive: billed_country_v2,
        },
    );
    let rebuilt = run(&h, &jobs, Trigger::Rebuild, 0).await;
    runner::clear_remap(name);
    assert_all_succeeded(&rebuilt);
    assert_eq!(upstream_requests(&h.sandbox), calls);
    let after = rows(&h.db).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same records"
    );
    let mut changed = 0;
    for (key, old) in &before {
        let new = &after[key];
        for column in &columns {
            if column == "billed_country" {
                let expected = old[column].as_str().map(|c| format!("{c} (v2)"));
                assert_eq!(new[column].as_str().map(str::to_owned), expected, "{key}");
                changed += usize::from(expected.is_some());
            } else {
                assert_eq!(new[column], old[column], "{key}: {column} changed");
            }
        }
    }
    assert!(changed > 0, "no row had a billed country to derive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_of_a_window_without_an_archive_fails_naming_the_window_and_keeps_its_rows() {
    let name = "archive_none_fax";
    let extra = format!(
        "{}\n[sources.retarus.archive]\nkeep_days = 0\n",
        job(name, "retarus", "fax_out_udr", "scope = [\"99999\"]")
    );
    let h = harness(SandboxOptions::default(), &extra).await;
    let jobs = vec![name.to_owned()];
    let loads = run(&h, &jobs, Trigger::Backfill, 3).await;
    assert_all_succeeded(&loads);
    assert_eq!(
        count(&h.db, "SELECT count(*) FROM archive.windows").await,
        0,
        "keep_days = 0 archives nothing"
    );
    let before = table_text(&h.db, "retarus.fax_out_udr").await;
    let run_ids = count(&h.db, "SELECT count(DISTINCT _run_id) FROM retarus.fax_out_udr").await;
    assert!(!before.is_empty());

    let reports = run(&h, &jobs, Trigger::Rebuild, 0).await;
    assert_eq!(reports.len(), loads.len(), "{reports:?}");
    for (report, load) in reports.iter().zip(&loads) {
        assert_eq!(report.status, RunStatus::Failed, "{report:?}");
        assert_eq!(report.error_kind, Some(FailureKind::InvalidAnswer));
        let (start, end) = load.window.expect("a backfill window");
        let named = format!(
            "window {}/{} of scope 99999",
            start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let error = report.error.as_deref().unwrap_or_default();
        assert!(error.contains(&named), "{error}");
        assert!(error.contains("no archived answers"), "{error}");
    }
    assert_eq!(
        count(&h.db, "SELECT count(*) FROM etl.runs WHERE trigger = 'rebuild' AND status = 'failed' AND error_kind = 'invalid_answer'").await,
        loads.len() as i64,
        "recorded in etl.runs"
    );
    assert_eq!(table_text(&h.db, "retarus.fax_out_udr").await, before);
    assert_eq!(
        count(&h.db, "SELECT count(DISTINCT _run_id) FROM retarus.fax_out_udr").await,
        run_ids,
        "the load's rows are untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archived_answer_to_another_query_text_the_mapping_cannot_read_fails_its_window_by_name() {
    let name = "archive_changed_query_fax";
    let h = harness(
        SandboxOptions::default(),
        &job(name, "retarus", "fax_out_udr", "scope = \"all\""),
    )
    .await;
    let jobs = vec![name.to_owned()];
    let loads = run(&h, &jobs, Trigger::Backfill, 2).await;
    assert_all_succeeded(&loads);
    let before = table_text(&h.db, "retarus.fax_out_udr").await;
    // The first answer, as an older text of the query might have been answered: a shape the
    // compiled decoding cannot read.
    assert!(!before.is_empty());
    let body = br#"{"data":{"faxOutUdrReport":{"content":"not a list"}}}"#;
    sqlx::query(
        "UPDATE archive.pages SET query_sha256 = sha256('an older query text'), body = $1, raw_bytes = $2 \
         WHERE page = 1 AND run_id = (SELECT min(run_id) FROM archive.windows)",
    )
    .bind(reporting_etl::archive::compress(body).unwrap())
    .bind(body.len() as i32)
    .execute(&h.db.pool)
    .await
    .unwrap();

    let reports = run(&h, &jobs, Trigger::Rebuild, 0).await;
    let failed: Vec<_> = reports.iter().filter(|r| r.status == RunStatus::Failed).collect();
    assert_eq!(failed.len(), 1, "{reports:?}");
    let error = failed[0].error.as_deref().unwrap_or_default();
    assert_eq!(failed[0].error_kind, Some(FailureKind::SchemaMismatch), "{error}");
    let (start, end) = failed[0].window.expect("a backfill window");
    let named = format!(
        "window {}/{} of scope {} (loaded by run",
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        failed[0].scope
    );
    assert!(error.contains(&named), "{error}");
    assert!(error.contains("another text of query"), "{error}");
    assert!(error.contains("the mapping cannot read it"), "{error}");
    assert_eq!(table_text(&h.db, "retarus.fax_out_udr").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_during_a_load_leaves_no_archived_answers_for_the_window_it_interrupted() {
    let mut options = SandboxOptions {
        records_per_day: 20,
        ..Default::default()
    };
    options.retarus.max_page_size = Some(5);
    let sandbox = Sandbox::start(options).await.unwrap();
    let db = TestDb::new().await;
    let extra = "\n[jobs.fax]\nsource = \"retarus\"\ndataset = \"fax_out_udr\"\nschedule = \"0 0 0 * * *\"\nscope = [\"99999\"]\n";
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, extra));
    let today = chrono::Utc::now().date_naive();
    let (from, to) = ((today - chrono::Days::new(10)).to_string(), today.to_string());
    let backfill = || {
        support::backfill_command(file.path(), "fax", &from, &to)
            .spawn()
            .unwrap()
    };
    // Six answers come at once, every later one takes a minute: the window has spooled answers
    // (each page's answers are spooled just before its rows are staged, and the loader asks for
    // the seventh only once the fifth page is staged) and is waiting for the next when it is
    // killed.
    sandbox.retarus.faults.set(sandbox::faults::FaultPlan {
        latency: Duration::from_secs(60),
        ..Default::default()
    });
    sandbox.retarus.faults.script_after(6, Vec::new());
    let mut child = backfill();
    let staging = "SELECT count(*) FROM pg_class WHERE relname LIKE 'etl_stage_retarus_fax_out_udr%' AND relpersistence = 't'";
    support::wait_until("the window staging pages", Duration::from_secs(60), || async {
        count(&db, staging).await > 0 && sandbox.retarus.graphql_calls() >= 7
    })
    .await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    // The killed session's temporary tables go with it, and the process's spool with the process.
    support::wait_until(
        "the killed load's session to end",
        Duration::from_secs(30),
        || async { count(&db, staging).await == 0 },
    )
    .await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM etl.runs WHERE status = 'running'").await,
        1
    );
    assert_eq!(count(&db, "SELECT count(*) FROM archive.windows").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM archive.pages").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM retarus.fax_out_udr").await, 0);

    // The same backfill to its end archives exactly the window's answers.
    sandbox.retarus.faults.set(sandbox::faults::FaultPlan::default());
    let status = backfill().wait().await.unwrap();
    assert!(status.success(), "{status}");
    let (pages, archived): (i32, i64) = sqlx::query_as(
        "SELECT r.pages, (SELECT count(*) FROM archive.pages p WHERE p.run_id = r.id) \
         FROM etl.runs r WHERE status = 'succeeded'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(pages > 6, "{pages} pages");
    assert_eq!(archived, i64::from(pages));
    assert_eq!(count(&db, "SELECT count(*) FROM archive.windows").await, 1);

    // `reporting-etl rebuild` re-derives it without a call; a range holding no window rebuilds
    // nothing; --from after --to is refused.
    let calls = sandbox.retarus.graphql_calls() + sandbox.retarus.token_requests();
    let rebuild = |args: &[&str]| {
        let mut command = support::binary();
        command.args(["rebuild", "--job", "fax"]).args(args);
        command.arg("--config").arg(file.path()).output().unwrap()
    };
    let done = rebuild(&[]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(
        sandbox.retarus.graphql_calls() + sandbox.retarus.token_requests(),
        calls
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM etl.runs WHERE trigger = 'rebuild' AND status = 'succeeded' AND upstream_calls = 0 AND rows_written > 0").await,
        1
    );
    let long_ago = rebuild(&["--from", "2001-01-01", "--to", "2001-02-01"]);
    assert!(long_ago.status.success());
    assert_eq!(
        count(&db, "SELECT count(*) FROM etl.runs WHERE trigger = 'rebuild'").await,
        1
    );
    let backwards = rebuild(&["--from", "2001-02-01", "--to", "2001-01-01"]);
    assert_eq!(backwards.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_deletes_exactly_the_archive_older_than_each_sources_keep_days() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    // (run, source, age): retarus keeps 30 days, altrata nothing, roubler the default 400.
    let windows = [
        (1, "retarus", "29 days 23 hours"),
        (2, "retarus", "30 days 1 hour"),
        (3, "retarus", "400 days"),
        (4, "roubler", "399 days"),
        (5, "roubler", "401 days"),
        (6, "altrata", "1 hour"),
        (7, "retently", "2 days"),
    ];
    for (run, source, age) in windows {
        sqlx::query(
            "INSERT INTO archive.windows (run_id, job, source, dataset, scope, scope_target, pages, \
             raw_bytes, stored_bytes, archived_at) \
             VALUES ($1, 'job', $2, 'd', 's', '{}', 1, 3, 3, now() - $3::interval)",
        )
        .bind(run)
        .bind(source)
        .bind(age)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO archive.pages (run_id, page, query_name, query_sha256, raw_bytes, body) \
             VALUES ($1, 1, 'Q', sha256('q'), 3, 'abc')",
        )
        .bind(run)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let port = support::free_port();
    let extra = format!(
        "\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n[sources.retarus.archive]\nkeep_days = 30\n\n\
         [sources.altrata.archive]\nkeep_days = 0\n"
    );
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    let log = tempfile::NamedTempFile::new().unwrap();
    let _service = support::spawn_service(file.path(), log.path());
    // One round at start-up (the next an hour later): its end is logged.
    support::wait_until("a retention round", Duration::from_secs(60), || async {
        std::fs::read_to_string(log.path()).is_ok_and(|l| l.contains("Archive retention round done."))
    })
    .await;
    let kept: Vec<i64> = sqlx::query_scalar("SELECT run_id FROM archive.windows ORDER BY run_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(kept, [1, 4, 7]);
    let pages: Vec<i64> = sqlx::query_scalar("SELECT run_id FROM archive.pages ORDER BY run_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(pages, [1, 4, 7], "the answers went with their windows");

    // What is left is what /metrics and `runs` report.
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (source, bytes) in [("retarus", 3), ("roubler", 3), ("retently", 3)] {
        let line = format!("reporting_etl_archive_bytes{{source=\"{source}\",dataset=\"d\"}} {bytes}");
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in:\n{metrics}");
    }
    let runs = support::binary()
        .args(["runs", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&runs.stdout);
    assert!(runs.status.success(), "{stdout}");
    let archive = stdout.split("Archive").nth(1).unwrap_or_default();
    for source in ["retarus", "roubler", "retently"] {
        assert!(
            archive
                .lines()
                .any(|l| l.starts_with(source) && l.contains(" d ")),
            "no {source} line in:\n{stdout}"
        );
    }
    assert!(!archive.contains("altrata"), "{stdout}");
}

#[test]
fn a_keep_days_out_of_range_is_refused_naming_the_key_and_value() {
    for (value, expected) in [
        (
            "40000",
            "sources.retarus.archive.keep_days: `40000` is out of range; use 0 to 36500 days",
        ),
        ("-1", "sources.retarus.archive.keep_days"),
        ("\"long\"", "sources.retarus.archive.keep_days"),
    ] {
        let text = format!(
            "[sources.retarus]\nkind = \"retarus\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             customer_ids = [\"1\"]\n\n[sources.retarus.archive]\nkeep_days = {value}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etl.toml");
        std::fs::write(&path, text).unwrap();
        let error = reporting_etl::app::load_settings(&reporting_etl::config::ConfigSource {
            path: Some(path),
            env: Some(Default::default()),
        })
        .expect_err("refused")
        .to_string();
        assert!(error.contains(expected), "{value}: {error}");
    }
}
