//! Test helpers shared by the integration tests: a fresh PostgreSQL database per test, on the
//! server named by `DATABASE_URL` or, without it, on an embedded server of our own (the same
//! mechanism the service uses), so `cargo test` works on a machine with no running server.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use reporting_etl::store::{self, EmbeddedPostgres};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

/// A database created for one test and dropped when the test ends (also on panic).
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// A fresh database with every migration applied: a copy of a database migrated once per set of
    /// migrations (see [`migrated_template`]), so a test does not pay for applying them again.
    pub async fn new() -> TestDb {
        let template = migrated_template().await;
        TestDb::create(Some(&template)).await
    }

    /// A fresh database with nothing in it.
    pub async fn empty() -> TestDb {
        TestDb::create(None).await
    }

    async fn create(template: Option<&str>) -> TestDb {
        let admin_url = server_url();
        let name = format!("etl_test_{}", uuid::Uuid::new_v4().simple());
        let admin = store::connect(&admin_url, 1)
            .await
            .expect("connect to the test server");
        let template = template.map_or(String::new(), |t| format!(" TEMPLATE {t}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}{template}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = database_url(&admin_url, &name);
        let pool = store::connect(&url, 5)
            .await
            .expect("connect to the test database");
        TestDb {
            url,
            pool,
            admin_url,
            name,
        }
    }
}

/// `admin_url` pointing at the database `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let options: PgConnectOptions = admin_url.parse().expect("valid URL");
    format!(
        "postgres://{}@{}:{}/{name}",
        options.get_username(),
        options.get_host(),
        options.get_port()
    )
}

/// The name of a database holding exactly what `store::migrate` makes of the embedded migrations,
/// created on first use. Applying the migrations takes ~2 s (one fsync'd transaction each);
/// copying the result takes a fraction of that. The name carries a hash of the migrations, so a
/// changed migration gets a template of its own, and test processes running at the same time
/// (nextest, several checkouts on one server) agree on it: one builds it under an advisory lock,
/// under a temporary name renamed only once it is complete, while the others wait.
async fn migrated_template() -> String {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            use sha2::Digest;
            use sqlx::Connection;
            // Keyed by the migrations `store::migrate` embeds (what the template will hold), not
            // by the files on disk, which a stale build may not have compiled in yet.
            let mut hash = sha2::Sha256::new();
            for migration in store::MIGRATOR.iter() {
                hash.update(migration.version.to_le_bytes());
                hash.update(&migration.checksum);
            }
            let digest: String = hash.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
            let name = format!("etl_template_{digest}");

            let admin_url = server_url();
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("connect to the test server");
            sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
                .bind(&name)
                .execute(&mut admin)
                .await
                .expect("lock the template's name");
            let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut admin)
                .await
                .expect("look for the template");
            if exists.is_none() {
                let building = format!("{name}_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {building}")))
                    .execute(&mut admin)
                    .await
                    .expect("create the template");
                let pool = store::connect(&database_url(&admin_url, &building), 1)
                    .await
                    .expect("connect to the template");
                store::migrate(&pool).await.expect("migrations apply");
                // A template can be copied only while nobody is connected to it.
                pool.close().await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE {building} RENAME TO {name}"
                )))
                .execute(&mut admin)
                .await
                .expect("name the template");
            }
            // Closing the session releases the advisory lock.
            let _ = admin.close().await;
            name
        })
        .await
        .clone()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = store::connect(&admin_url, 1).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// A long form's knob: the environment variable `name` as a number, `default` when it is unset or
/// not a number (the test command runs the short form; tests/README.md lists the long ones).
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `DATABASE_URL`, else an embedded server shared by all test processes (left running).
pub fn server_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("embedded-pg");
    let server = EmbeddedPostgres::start(&dir).expect("start the embedded test server");
    let url = server.url_for("postgres");
    server.detach();
    url
}

/// The service binary built for these tests.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reporting-etl"));
    // Tests pass everything explicitly; nothing leaks in from the developer's shell.
    for (key, _) in std::env::vars() {
        if key.starts_with("REPORTING_ETL") {
            command.env_remove(key);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// `reporting-etl run --config CONFIG` (the service) with its log going to `log`. Killed when
/// the handle is dropped, so a failing test leaves no service behind.
pub fn spawn_service(config: &std::path::Path, log: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::from(binary())
        .args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("service log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("the service starts")
}

/// A loopback port free a moment ago (for `server.listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// `reporting-etl run --once --job JOB --from FROM --to TO --config CONFIG`, output discarded,
/// killed when dropped.
pub fn backfill_command(
    config: &std::path::Path,
    job: &str,
    from: &str,
    to: &str,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::from(binary());
    command
        .args([
            "run", "--once", "--job", job, "--from", from, "--to", to, "--config",
        ])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// A temporary directory the embedded server's unprivileged user can traverse.
pub fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A configuration with one source of each vendor pointing at `sandbox`, on database `db_url`.
/// `extra` is appended (jobs, overrides).
pub fn sandbox_config(sandbox: &sandbox::Sandbox, db_url: &str, extra: &str) -> String {
    reporting_etl::cli::demo::sandbox_config(
        sandbox,
        &format!("\n[database]\nurl = \"{db_url}\"\npool_size = 4\n{extra}"),
    )
}

/// Loads a configuration text through the real loader (as the binary would).
pub fn load_config(text: &str) -> (reporting_etl::config::Settings, tempfile::NamedTempFile) {
    use std::io::Write;
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("tempfile");
    file.write_all(text.as_bytes()).expect("write config");
    let settings = reporting_etl::app::load_settings(&reporting_etl::config::ConfigSource {
        path: Some(file.path().to_path_buf()),
        env: Some(Default::default()),
    })
    .expect("the sandbox configuration is valid");
    (settings, file)
}

/// Stores an authorization-code grant in `etl.tokens` as `auth login` would (refresh token
/// unencrypted), with the access token valid for `lifetime_secs` (negative: already expired).
pub async fn seed_refresh_chain(
    pool: &PgPool,
    source: &str,
    grant: &sandbox::authcode::TokenGrant,
    lifetime_secs: f64,
) {
    sqlx::query(
        "INSERT INTO etl.tokens (source, flow, access_token, access_expires_at, refresh_token,
                                 refresh_token_encrypted, version, chain_started_at, last_refresh_at)
         VALUES ($1, 'authorization_code', $2, now() + make_interval(secs => $3), $4, false, 1, now(), now())",
    )
    .bind(source)
    .bind(&grant.access_token)
    .bind(lifetime_secs)
    .bind(grant.refresh_token.clone().unwrap_or_default().into_bytes())
    .execute(pool)
    .await
    .expect("seed the refresh chain");
}

/// Waits until `condition` (a database query, a sandbox counter, a log file…) holds, checking
/// every 20 ms; panics naming `what` after `timeout`. Tests wait on the event they depend on
/// instead of sleeping for a time that is long enough on an idle machine only.
pub async fn wait_until<F, Fut>(what: &str, timeout: std::time::Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Like [`wait_until`], for a condition that yields what it found (`Some`) once it holds.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: std::time::Duration, found: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll_for(timeout, found)
        .await
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Like [`wait_for`], but `None` after `timeout` instead of a panic: for a caller whose own
/// assertion then says what was missing (a log, the counts that fell short).
pub async fn poll_for<T, F, Fut>(timeout: std::time::Duration, mut found: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = found().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs of `job` in `etl.runs` with `status`.
pub async fn count_runs(pool: &PgPool, job: &str, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM etl.runs WHERE job = $1 AND status = $2")
        .bind(job)
        .bind(status)
        .fetch_one(pool)
        .await
        .expect("count runs")
}

/// The most calls in any half-open window `[t, t + window)` among `times`.
pub fn max_in_any_window(mut times: Vec<tokio::time::Instant>, window: std::time::Duration) -> usize {
    times.sort();
    let (mut best, mut first) = (0, 0);
    for (last, at) in times.iter().enumerate() {
        while at.duration_since(times[first]) >= window {
            first += 1;
        }
        best = best.max(last + 1 - first);
    }
    best
}

/// The most calls in one window of a vendor whose windows open with the first call after the
/// last reset (the sandbox's default), as that vendor counts them: a client that spends a fixed
/// window's full limit right after its reset puts more than that into some sliding window of the
/// same length without going over the vendor's limit.
pub fn max_in_first_call_windows(mut times: Vec<tokio::time::Instant>, window: std::time::Duration) -> usize {
    times.sort();
    let (mut best, mut opened, mut count) = (0, None, 0);
    for at in times {
        match opened {
            Some(start) if at.duration_since(start) < window => count += 1,
            _ => {
                opened = Some(at);
                count = 1;
            }
        }
        best = best.max(count);
    }
    best
}

/// Fax records the sandbox holds for both of its customers over the span the job's succeeded
/// runs cover: what `retarus.fax_out_udr` must contain once those windows are loaded.
pub async fn expected_fax_rows(sandbox: &sandbox::Sandbox, pool: &PgPool) -> usize {
    let (first, last): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT min(window_start), max(window_end) FROM etl.runs WHERE job = 'fax' AND status = 'succeeded'",
    )
    .fetch_one(pool)
    .await
    .expect("succeeded fax windows");
    ["99999", "88888"]
        .iter()
        .map(|customer| {
            sandbox
                .retarus
                .records(sandbox::retarus::RetarusReport::FaxOut, customer, first, last)
                .len()
        })
        .sum()
}

/// A private server in its own directory, stopped, started and restarted only by this test.
pub struct PrivateDb {
    pub dir: tempfile::TempDir,
    pub server: Option<EmbeddedPostgres>,
    pub url: String,
}

impl PrivateDb {
    pub async fn start() -> PrivateDb {
        let dir = shared_tempdir();
        let server = start_server(dir.path().to_path_buf()).await;
        let url = server.url();
        PrivateDb {
            dir,
            server: Some(server),
            url,
        }
    }

    /// Stops the server (fast shutdown: every session ends).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            stop_server(server).await;
        }
    }

    /// Starts the stopped server again on the same data directory and port.
    pub async fn start_again(&mut self) {
        let server = start_server(self.dir.path().to_path_buf()).await;
        assert_eq!(server.url(), self.url, "the server came back on another port");
        self.server = Some(server);
    }

    /// `pg_ctl restart -m fast`.
    pub async fn restart_fast(&mut self) {
        let server = self.server.take().expect("running");
        let server = tokio::task::spawn_blocking(move || {
            server.restart_fast().expect("restart the private server");
            server
        })
        .await
        .unwrap();
        self.server = Some(server);
    }
}

/// Starts the embedded server on `dir` (off the async threads: it waits for the server).
async fn start_server(dir: std::path::PathBuf) -> EmbeddedPostgres {
    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir))
        .await
        .unwrap()
        .expect("start a private PostgreSQL server")
}

/// Stops `server` (fast shutdown: every session ends).
pub async fn stop_server(mut server: EmbeddedPostgres) {
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap()
        .expect("stop the private server");
}

/// The cheapest company-scoped Roubler query, untyped: for tests and benchmarks that count calls.
pub struct RoublerLocations;

impl graphql_client::GraphQLQuery for RoublerLocations {
    type Variables = serde_json::Value;
    type ResponseData = serde_json::Value;
    fn build_query(variables: serde_json::Value) -> graphql_client::QueryBody<serde_json::Value> {
        graphql_client::QueryBody {
            variables,
            query: "query Locations { locations { id } }",
            operation_name: "Locations",
        }
    }
}
