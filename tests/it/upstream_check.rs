//! `reporting-etl check --upstream`: the real binary introspects every sandbox GraphQL vendor
//! through the executor and checks every compiled query against what it finds. The normal
//! sandbox serves the schemas the queries were compiled against: no drift, exit 0. A sandbox
//! started with a field removed (as a vendor's release might) must be caught: exit 1, and a line
//! naming the field, its type and the query file (the sandbox refuses queries selecting it:
//! `sandbox/tests/drift.rs`).
//!
//! A scalar field whose type the vendor renamed is judged by what the generated types decode,
//! and each verdict is proved by a run of the dataset against the same sandbox: `Date` become
//! `String` with the same JSON strings is a notice (exit 0, and the run loads every row), `Date`
//! become `Int` with numbers, or `Float` become `String` with strings, is drift (exit 1, and the run
//! fails `schema_mismatch`).

use crate::support;

use sandbox::drift::{NewScalar, RemovedField, RetypedField};
use sandbox::{Sandbox, SandboxOptions};
use support::TestDb;

/// A sandbox, a migrated database (with Roubler's refresh chain seeded when `authorise_roubler`)
/// and a configuration file with `extra` appended.
struct Harness {
    sandbox: Sandbox,
    _db: TestDb,
    config: tempfile::NamedTempFile,
}

async fn harness(options: SandboxOptions, authorise_roubler: bool, extra: &str) -> Harness {
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let db = TestDb::new().await;
    let (_, config) = support::load_config(&support::sandbox_config(&sandbox, &db.url, extra));
    if authorise_roubler {
        // Roubler needs a person's consent once; seed its refresh chain as `auth login` would.
        let grant = sandbox.roubler.grant_tokens();
        support::seed_refresh_chain(&db.pool, "roubler", &grant, grant.expires_in as f64).await;
    }
    Harness {
        sandbox,
        _db: db,
        config,
    }
}

/// Runs the binary with `args` and `--config`; (exit code, stdout, stderr).
async fn binary(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::from(support::binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_upstream_finds_no_drift_against_the_schemas_the_queries_were_compiled_for() {
    let h = harness(SandboxOptions::default(), true, "").await;
    let calls_before = h.sandbox.retarus.graphql_calls();
    let (code, stdout, stderr) = binary(h.config.path(), &["check", "--upstream"]).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // 5 Retarus + 6 Roubler + 3 Altrata queries; Retently is said to be skipped, not silently left out.
    assert_eq!(
        stdout,
        "retently: skipped: a retently source has a REST API, no GraphQL schema to check\n\
         14 queries checked against 3 sources, no drift.\n"
    );
    // The schema came from the vendor, over the authenticated executor: one introspection.
    assert_eq!(h.sandbox.retarus.graphql_calls() - calls_before, 1);

    // Plain `check` is still the configuration check alone: no database, no upstream call.
    let (code, stdout, _) = binary(h.config.path(), &["check"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("Configuration is valid."), "{stdout}");
    assert_eq!(h.sandbox.retarus.graphql_calls() - calls_before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_upstream_names_a_removed_field_its_type_and_the_query_file() {
    let mut options = SandboxOptions::default();
    options.retarus.removed_fields = vec![RemovedField::new("FaxInUdrReportRecord", "faxId")];
    let job = "\n[jobs.fax_in]\nsource = \"retarus\"\ndataset = \"fax_in_udr\"\nschedule = \"0 0 0 * * *\"\n";
    let h = harness(options, true, job).await;

    let (code, stdout, stderr) = binary(h.config.path(), &["check", "--upstream"]).await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        stdout,
        "retarus: queries/retarus/fax_in_udr.graphql: FaxInUdrReportRecord.faxId: the field is gone \
         (used at faxInUdrReport.content.faxId)\n\
         retently: skipped: a retently source has a REST API, no GraphQL schema to check\n\
         14 queries checked against 3 sources: 1 problem in 1 query.\n\
         The live schema no longer fits these queries: runs of their datasets will fail. \
         `reporting-etl schema pull SOURCE` writes the live schema to schemas/; rebuild to see \
         where the queries must change.\n"
    );

    // What `check --upstream` predicts: a run of that dataset fails, naming the field, and
    // leaves no run behind as `running`.
    let today = chrono::Utc::now().date_naive();
    let (from, to) = ((today - chrono::Days::new(1)).to_string(), today.to_string());
    let args = ["run", "--once", "--job", "fax_in", "--from", &from, "--to", &to];
    let run = binary(h.config.path(), &args);
    let (code, stdout, stderr) = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the run ends instead of hanging");
    assert_ne!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let failed: Vec<(String,)> =
        sqlx::query_as("SELECT error FROM etl.runs WHERE job = 'fax_in' AND status = 'failed'")
            .fetch_all(&h._db.pool)
            .await
            .expect("runs");
    assert!(!failed.is_empty(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(failed.iter().all(|(e,)| e.contains("faxId")), "{failed:?}");
    assert_eq!(support::count_runs(&h._db.pool, "fax_in", "running").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_upstream_fails_naming_a_source_it_cannot_introspect() {
    // Roubler never authorised: its introspection is refused before any call.
    let h = harness(SandboxOptions::default(), false, "").await;
    let (code, stdout, stderr) = binary(h.config.path(), &["check", "--upstream"]).await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Sources in name order: altrata, retarus, retently, roubler.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines[0],
        "retently: skipped: a retently source has a REST API, no GraphQL schema to check"
    );
    assert!(
        lines[1].starts_with("roubler: could not introspect the graphql service: ")
            && lines[1].contains("auth login roubler"),
        "{stdout}"
    );
    assert_eq!(
        lines[2],
        "8 queries checked against 3 sources: 1 service not introspected."
    );
}

/// The Roubler `location_sales` job of the scalar tests.
const SALES_JOB: &str =
    "\n[jobs.sales]\nsource = \"roubler\"\ndataset = \"location_sales\"\nschedule = \"0 0 0 * * *\"\n";

/// A sandbox whose Roubler `LocationSalesDay.<field>` is now `to`, values included.
async fn sales_field_retyped(field: &str, to: NewScalar) -> Harness {
    let mut options = SandboxOptions::default();
    options.roubler.retyped_fields = vec![RetypedField::new("LocationSalesDay", field, to)];
    harness(options, true, SALES_JOB).await
}

/// `run --once` of the sales job over the three days before today: (the days, exit code, stdout,
/// stderr).
async fn run_sales(
    h: &Harness,
) -> (
    (chrono::NaiveDate, chrono::NaiveDate),
    (Option<i32>, String, String),
) {
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today - chrono::Days::new(3), today);
    let (from_text, to_text) = (from.to_string(), to.to_string());
    let args = [
        "run", "--once", "--job", "sales", "--from", &from_text, "--to", &to_text,
    ];
    let run = binary(h.config.path(), &args);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the run ends instead of hanging");
    ((from, to), output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_renamed_string_with_the_same_values_is_a_notice_and_the_run_loads_every_row() {
    let h = sales_field_retyped("day", NewScalar::String).await;

    let (code, stdout, stderr) = binary(h.config.path(), &["check", "--upstream"]).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        stdout,
        "retently: skipped: a retently source has a REST API, no GraphQL schema to check\n\
         roubler: queries/roubler/location_sales.graphql: notice: LocationSalesDay.day: its type \
         changed from `Date` to `String`; its values still come as JSON strings, which the \
         generated type (NaiveDate) decodes as before; the schema no longer promises a calendar \
         date (YYYY-MM-DD), and a value that is not one would fail the run (used at \
         locationSales.day)\n\
         14 queries checked against 3 sources, no drift; 1 notice of a renamed type whose values \
         still decode.\n\
         Runs are not affected. `reporting-etl schema pull SOURCE` writes the live schema to \
         schemas/ to bring the compiled one up to date.\n"
    );

    // The verdict, proved: the run loads exactly the days the vendor has for each location.
    let ((from, to), (code, stdout, stderr)) = run_sales(&h).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let pool = &h._db.pool;
    let loaded: Vec<(String, String, Option<f64>)> = sqlx::query_as(
        "SELECT location_id, day::text, actual::float8 FROM roubler.location_sales ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("rows");
    let mut served = Vec::new();
    for company in h.sandbox.roubler.companies() {
        for location in h
            .sandbox
            .roubler
            .locations(company["id"].as_str().expect("company id"))
        {
            let id = location["id"].as_str().expect("location id");
            let around = |day: chrono::NaiveDate, days: i64| {
                day.and_hms_opt(0, 0, 0).expect("midnight").and_utc() + chrono::TimeDelta::days(days)
            };
            for sale in h
                .sandbox
                .roubler
                .location_sales(id, around(from, -2), around(to, 2))
            {
                let day = sale["day"].as_str().expect("day").to_owned();
                if (from.to_string()..to.to_string()).contains(&day) {
                    served.push((id.to_owned(), day, sale["actual"].as_f64()));
                }
            }
        }
    }
    served.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert!(served.len() >= 9, "{served:?}");
    assert_eq!(loaded, served);
    assert_eq!(support::count_runs(pool, "sales", "failed").await, 0);
    assert!(support::count_runs(pool, "sales", "succeeded").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_become_a_number_or_the_reverse_is_drift_and_the_run_fails_with_schema_mismatch() {
    for (field, to, reported) in [
        (
            "day",
            NewScalar::Int,
            "LocationSalesDay.day: its type changed from `Date` to `Int`: its values now come as \
             JSON integers, which the generated type (NaiveDate) cannot decode: it takes JSON \
             strings (used at locationSales.day)",
        ),
        (
            "actual",
            NewScalar::String,
            "LocationSalesDay.actual: its type changed from `Float` to `String`: its values now \
             come as JSON strings, which the generated type (f64) cannot decode: it takes JSON \
             numbers, fractions included (used at locationSales.actual)",
        ),
    ] {
        a_change_is_drift_and_the_run_fails_with_schema_mismatch(field, to, reported).await;
    }
}

async fn a_change_is_drift_and_the_run_fails_with_schema_mismatch(
    field: &str,
    to: NewScalar,
    reported: &str,
) {
    let h = sales_field_retyped(field, to).await;

    let (code, stdout, stderr) = binary(h.config.path(), &["check", "--upstream"]).await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        stdout,
        format!(
            "retently: skipped: a retently source has a REST API, no GraphQL schema to check\n\
             roubler: queries/roubler/location_sales.graphql: {reported}\n\
             14 queries checked against 3 sources: 1 problem in 1 query.\n\
             The live schema no longer fits these queries: runs of their datasets will fail. \
             `reporting-etl schema pull SOURCE` writes the live schema to schemas/; rebuild to see \
             where the queries must change.\n"
        )
    );

    // The verdict, proved: the run fails, as the decode failure it is, and loads nothing.
    let (_, (code, stdout, stderr)) = run_sales(&h).await;
    assert_ne!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let pool = &h._db.pool;
    let kinds: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, error_kind FROM etl.runs WHERE job = 'sales'")
            .fetch_all(pool)
            .await
            .expect("runs");
    assert!(!kinds.is_empty(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        kinds
            .iter()
            .all(|(status, kind)| status == "failed" && kind.as_deref() == Some("schema_mismatch")),
        "{field} -> {to:?}: {kinds:?}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM roubler.location_sales")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}
