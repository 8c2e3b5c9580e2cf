//! `reporting-etl check --upstream`: the real binary introspects every sandbox GraphQL vendor
//! through the executor and checks every compiled query against what it finds. The normal
//! sandbox serves the schemas the queries were compiled against: no drift, exit 0. A sandbox
//! started with a field removed (as a vendor's release might) must be caught: exit 1, and a line
//! naming the field, its type and the query file (the sandbox refuses queries selecting it:
//! `sandbox/tests/drift.rs`).

use crate::support;

use sandbox::drift::RemovedField;
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
