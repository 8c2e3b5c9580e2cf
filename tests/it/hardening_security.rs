//! Security properties, each proven against the real thing: https-only endpoints unless a source
//! opts out, token requests that never follow a redirect, `auth login` listening on loopback
//! only, `sslmode=verify-full` honoured, the least-privilege roles of
//! `deploy/least-privilege.sql`, and no secret in anything the binary prints even at
//! `RUST_LOG=trace`.

use crate::support;

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reporting_etl::auth::endpoint::{self, ClientAuth, EndpointError, Grant};
use reporting_etl::config::{ConfigError, ConfigSource, HttpUrl, Settings};
use reporting_etl::failure::FailureKind;
use reporting_etl::transport::Transport;
use sandbox::{Sandbox, SandboxOptions};
use secrecy::SecretString;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use support::TestDb;
use tokio::io::{AsyncBufReadExt, BufReader};

fn load(text: &str) -> Result<Settings, ConfigError> {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    reporting_etl::app::load_settings(&ConfigSource {
        path: Some(file.path().to_path_buf()),
        env: Some(HashMap::new()),
    })
}

/// One source of each kind with every endpoint set to https.
fn sources(allow_http: bool) -> Vec<(&'static str, String, Vec<&'static str>)> {
    let allow = if allow_http { "allow_http = true\n" } else { "" };
    vec![
        (
            "retarus",
            format!(
                "[sources.s]\nkind = \"retarus\"\n{allow}client_id = \"c\"\nclient_secret = \"s3cret-value\"\ncustomer_ids = [\"1\"]\ntoken_url = \"https://a.example.com/token\"\ngraphql_url = \"https://a.example.com/graphql\"\n"
            ),
            vec!["token_url", "graphql_url"],
        ),
        (
            "roubler",
            format!(
                "[sources.s]\nkind = \"roubler\"\n{allow}client_id = \"c\"\nclient_secret = \"s3cret-value\"\nauthorize_url = \"https://a.example.com/auth\"\ntoken_url = \"https://a.example.com/token\"\ngraphql_url = \"https://a.example.com/graphql\"\n"
            ),
            vec!["authorize_url", "token_url", "graphql_url"],
        ),
        (
            "altrata",
            format!(
                "[sources.s]\nkind = \"altrata\"\n{allow}username = \"u\"\npassword = \"s3cret-value\"\napi_key = \"k3y-value\"\ntoken_url = \"https://a.example.com/token\"\nevents_url = \"https://a.example.com/events\"\nprofile_url = \"https://a.example.com/profile\"\n"
            ),
            vec!["token_url", "events_url", "profile_url"],
        ),
        (
            "retently",
            format!(
                "[sources.s]\nkind = \"retently\"\n{allow}api_key = \"k3y-value\"\nbase_url = \"https://a.example.com\"\nauthorize_url = \"https://a.example.com/auth\"\ntoken_url = \"https://a.example.com/token\"\n"
            ),
            vec!["base_url", "authorize_url", "token_url"],
        ),
    ]
}

#[test]
fn every_upstream_and_token_url_must_be_https_unless_the_source_allows_http() {
    for (kind, text, keys) in sources(false) {
        load(&text).unwrap_or_else(|e| panic!("{kind}: the https configuration is refused: {e}"));
        for key in keys {
            let plain = text.replace(&format!("{key} = \"https://"), &format!("{key} = \"http://"));
            let error = load(&plain).expect_err(&format!("{kind}.{key} over http was accepted"));
            assert_eq!(error.problems.len(), 1, "{error}");
            assert_eq!(error.problems[0].key, format!("sources.s.{key}"), "{error}");
            assert!(
                error.problems[0].message.contains("http://a.example.com")
                    && error.problems[0].message.contains("allow_http"),
                "{error}"
            );
        }
    }
    for (kind, text, keys) in sources(true) {
        let mut plain = text;
        for key in keys {
            plain = plain.replace(&format!("{key} = \"https://"), &format!("{key} = \"http://"));
        }
        load(&plain).unwrap_or_else(|e| panic!("{kind} with allow_http: {e}"));
    }
}

/// A token endpoint that redirects (with `status`) to a second path on the same server, and
/// counts what reaches each.
async fn redirecting_token_server(status: u16) -> (sandbox::ServerGuard, Arc<AtomicU64>, Arc<AtomicU64>) {
    use axum::http::{HeaderMap, StatusCode, header};
    let asked = Arc::new(AtomicU64::new(0));
    let followed = Arc::new(AtomicU64::new(0));
    let (a, f) = (asked.clone(), followed.clone());
    let router = axum::Router::new()
        .route(
            "/token",
            axum::routing::post(move || {
                let a = a.clone();
                async move {
                    a.fetch_add(1, Ordering::SeqCst);
                    let mut headers = HeaderMap::new();
                    headers.insert(header::LOCATION, "/stolen".parse().unwrap());
                    (StatusCode::from_u16(status).unwrap(), headers, "")
                }
            }),
        )
        .route(
            "/stolen",
            axum::routing::any(move || {
                let f = f.clone();
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    r#"{"access_token":"stolen-token","expires_in":300}"#
                }
            }),
        );
    (sandbox::serve(router).await.unwrap(), asked, followed)
}

#[tokio::test]
async fn token_requests_never_follow_a_redirect() {
    let secret = || SecretString::from("client-secret-value".to_owned());
    let clients = [
        ClientAuth::FormWithScope {
            client_id: "c".into(),
            secret: secret(),
        },
        ClientAuth::BasicWithApiKey {
            username: "u".into(),
            password: secret(),
            api_key: secret(),
        },
        ClientAuth::Basic {
            client_id: "c".into(),
            secret: secret(),
        },
        ClientAuth::Form {
            client_id: "c".into(),
            secret: secret(),
        },
    ];
    for status in [301, 302, 303, 307, 308] {
        let (server, asked, followed) = redirecting_token_server(status).await;
        let url = HttpUrl::parse(&format!("http://{}/token", server.addr)).unwrap();
        let transport = Transport::new(endpoint::limits()).unwrap();
        for client in &clients {
            let result = endpoint::request(&transport, &url, client, Grant::ClientCredentials).await;
            let error = match result {
                Ok(_) => panic!("HTTP {status}: a token came back through the redirect"),
                Err(error) => error,
            };
            // Refused at once as `upstream_rejected`, as the same redirect on a data call is:
            // an answer that would come back the same is not worth retrying.
            assert!(
                matches!(
                    error,
                    EndpointError::Unusable {
                        kind: FailureKind::UpstreamRejected,
                        ..
                    }
                ),
                "HTTP {status}: {}",
                error.reason()
            );
            let error = error.reason();
            assert!(error.contains(&status.to_string()), "{error}");
            assert!(!error.contains("client-secret-value"), "{error}");
        }
        assert_eq!(asked.load(Ordering::SeqCst), clients.len() as u64);
        assert_eq!(followed.load(Ordering::SeqCst), 0, "HTTP {status} was followed");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// This machine's address on its default route, if it has one (it is not loopback).
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn accepts(address: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
}

/// Starts `auth login roubler` with `redirect_uri` and returns it once it waits for the redirect,
/// with what it printed.
async fn login_waiting(
    sandbox: &Sandbox,
    db: &TestDb,
    redirect_uri: &str,
) -> (tokio::process::Child, String, tempfile::NamedTempFile) {
    let text = support::sandbox_config(sandbox, &db.url, "").replace(
        &format!("redirect_uri = \"{}\"", sandbox.roubler.redirect_uri),
        &format!("redirect_uri = \"{redirect_uri}\""),
    );
    let (_, file) = support::load_config(&text);
    let mut child = tokio::process::Command::from(support::binary())
        .args(["auth", "login", "roubler", "--config"])
        .arg(file.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the login prints its prompt")
            .unwrap()
            .expect("the login is still running");
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("paste") {
            break;
        }
    }
    (child, printed, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_listens_on_loopback_only_and_nowhere_for_another_redirect_host() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let elsewhere = non_loopback_address();

    // A redirect to another host: nothing may listen, on any interface; a pasted URL is asked for.
    let port = free_port();
    let (mut child, printed, _file) =
        login_waiting(&sandbox, &db, &format!("http://192.0.2.10:{port}/callback")).await;
    assert!(
        printed.contains("is not a loopback address, so nothing listens")
            && printed.contains("paste the URL"),
        "{printed}"
    );
    assert!(
        !accepts(([127, 0, 0, 1], port).into()),
        "something listens on 127.0.0.1:{port}"
    );
    if let Some(ip) = elsewhere {
        assert!(!accepts((ip, port).into()), "something listens on {ip}:{port}");
    }
    child.kill().await.unwrap();

    // A loopback redirect: the listener is there, but on loopback only.
    let port = free_port();
    let (mut child, printed, _file) =
        login_waiting(&sandbox, &db, &format!("http://127.0.0.1:{port}/callback")).await;
    assert!(printed.contains("Waiting for the redirect"), "{printed}");
    assert!(
        accepts(([127, 0, 0, 1], port).into()),
        "nothing listens on 127.0.0.1:{port}"
    );
    match elsewhere {
        Some(ip) => assert!(
            !accepts((ip, port).into()),
            "the login listens on {ip}:{port} too"
        ),
        None => println!("no non-loopback address on this machine: only loopback was checked"),
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_url_with_sslmode_verify_full_is_accepted_and_honoured() {
    let url = "postgres://reporting_etl:pw@db.example.com:5432/reporting?sslmode=verify-full&sslrootcert=/etc/ssl/certs/db-ca.pem";
    let options: PgConnectOptions = url.parse().unwrap();
    assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
    assert_eq!(options.get_host(), "db.example.com");
    let settings = load(&format!("[database]\nurl = \"{url}\"\n")).unwrap();
    assert!(settings.database.url.is_some());

    // Honoured, not downgraded: the test server's certificate is not signed by a CA this client
    // trusts (or it offers no TLS at all), so verify-full must refuse what sslmode=disable takes.
    let db = TestDb::new().await;
    let separator = if db.url.contains('?') { '&' } else { '?' };
    reporting_etl::store::connect(&format!("{}{separator}sslmode=disable", db.url), 1)
        .await
        .expect("the test server is reachable without TLS")
        .close()
        .await;
    let refused =
        reporting_etl::store::connect(&format!("{}{separator}sslmode=verify-full", db.url), 1).await;
    let error = format!(
        "{:#}",
        refused.expect_err("verify-full connected to an unverifiable server")
    );
    let lower = error.to_lowercase();
    assert!(
        lower.contains("tls") || lower.contains("ssl") || lower.contains("certificate"),
        "{error}"
    );
}

/// Connects to `url` as another role (the test server trusts loopback connections).
fn as_role(url: &str, role: &str) -> String {
    let options: PgConnectOptions = url.parse().unwrap();
    format!(
        "postgres://{role}@{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap()
    )
}

async fn denied(connection: &mut sqlx::PgConnection, sql: &str) -> bool {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *connection)
        .await
    {
        Ok(_) => false,
        Err(error) => {
            let text = error.to_string();
            assert!(text.contains("permission denied"), "{sql}: {text}");
            true
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_roles_let_the_writer_work_and_the_reader_only_read() {
    let script =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/least-privilege.sql")).unwrap();
    let db = TestDb::empty().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(script.clone()))
        .execute(&db.pool)
        .await
        .expect("the script applies to a fresh database");

    // The writer migrates and runs the service (every statement of a load, tokens, locks).
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let writer_url = as_role(&db.url, "reporting_etl");
    let jobs = "\n[jobs.fax]\nsource = \"retarus\"\ndataset = \"fax_out_udr\"\nschedule = \"0 0 * * * *\"\n\
                [jobs.nps]\nsource = \"retently\"\ndataset = \"nps_score\"\nschedule = \"0 0 * * * *\"\n";
    let (_, config) = support::load_config(&support::sandbox_config(&sandbox, &writer_url, jobs));
    let output = tokio::process::Command::from(support::binary())
        .args(["run", "--once", "--config"])
        .arg(config.path())
        .output()
        .await
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    // After the first start the views exist: the script grants them (re-running it is safe).
    sqlx::raw_sql(sqlx::AssertSqlSafe(script))
        .execute(&db.pool)
        .await
        .unwrap();
    let owner: String = sqlx::query_scalar(
        "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'etl' AND tablename = 'tokens'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(owner, "reporting_etl");

    // The reader: a superuser connection that becomes the role has exactly the role's rights.
    let mut reader = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("SET ROLE reporting_reader")
        .execute(&mut reader)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM retarus.fax_out_udr")
        .fetch_one(&mut reader)
        .await
        .expect("the reader reads vendor tables");
    assert!(rows > 0);
    for table in [
        "roubler.employees",
        "altrata.events",
        "retently.nps_score",
        "etl.freshness",
        "etl.latest_success",
        "etl.archive_sizes",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SELECT * FROM {table} LIMIT 1")))
            .execute(&mut reader)
            .await
            .unwrap_or_else(|e| panic!("the reader cannot read {table}: {e}"));
    }
    let freshness: i64 = sqlx::query_scalar("SELECT count(*) FROM etl.freshness")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert!(
        freshness >= 2,
        "the view shows the runs through its owner's rights"
    );
    for sql in [
        "SELECT * FROM etl.tokens",
        "SELECT * FROM etl.runs",
        "SELECT * FROM archive.pages",
        "INSERT INTO retarus.fax_out_udr (source, customer_id, fax_id, _run_id) VALUES ('x', 'x', 'x', 1)",
        "INSERT INTO etl.tokens (source, flow) VALUES ('x', 'x')",
        "DELETE FROM retently.nps_score",
        "UPDATE roubler.employees SET full_name = 'x'",
        "CREATE TABLE retarus.mine (id int)",
        "CREATE TEMP TABLE mine (id int)",
    ] {
        assert!(denied(&mut reader, sql).await, "the reader may: {sql}");
    }
    reader.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_appears_in_anything_the_binary_prints_even_at_trace_level() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    const DB_PASSWORD: &str = "pg-password-not-for-logs-31337";
    // The test server trusts loopback: the password is sent nowhere but must never be printed.
    let url = db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DB_PASSWORD}@"),
        1,
    );
    assert_ne!(url, db.url, "the test database URL has the expected shape");
    // Roubler's consent, with an access token already expired so the run must rotate the chain.
    let grant = sandbox.roubler.grant_tokens();
    support::seed_refresh_chain(&db.pool, "roubler", &grant, -60.0).await;
    let jobs = "\n[jobs.fax]\nsource = \"retarus\"\ndataset = \"fax_out_udr\"\nschedule = \"0 0 * * * *\"\n\
                [jobs.staff]\nsource = \"roubler\"\ndataset = \"employees\"\nschedule = \"0 0 * * * *\"\n\
                [jobs.people]\nsource = \"altrata\"\ndataset = \"profiles\"\nschedule = \"0 0 * * * *\"\n\
                [jobs.nps]\nsource = \"retently\"\ndataset = \"nps_score\"\nschedule = \"0 0 * * * *\"\n";
    let (_, config) = support::load_config(&support::sandbox_config(&sandbox, &url, jobs));

    let mut printed = String::new();
    for args in [
        vec!["check"],
        vec!["run", "--once"],
        vec!["auth", "status"],
        vec!["auth", "refresh", "altrata"],
        vec!["runs"],
    ] {
        let output = tokio::process::Command::from(support::binary())
            .args(&args)
            .arg("--config")
            .arg(config.path())
            .env("RUST_LOG", "trace")
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{args:?} failed:\n{}", tail(&text));
        printed.push_str(&text);
    }
    // Every dataset loaded, so every credential was used.
    let statuses: Vec<(String, String)> = sqlx::query_as("SELECT job, status FROM etl.runs ORDER BY job")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(
        statuses.iter().all(|(_, status)| status == "succeeded") && statuses.len() >= 4,
        "{statuses:?}"
    );

    let mut secrets = vec![
        sandbox.retarus.client_secret.clone(),
        sandbox.roubler.client_secret.clone(),
        sandbox.altrata.password.clone(),
        sandbox.altrata.api_key.clone(),
        sandbox.retently.api_key.clone(),
        sandbox.retently.client_secret.clone(),
        grant.access_token.clone(),
        grant.refresh_token.clone().unwrap_or_default(),
        DB_PASSWORD.to_owned(),
    ];
    let stored: Vec<(String, Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT source, access_token, refresh_token FROM etl.tokens")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    for (source, access, refresh) in &stored {
        secrets.extend(access.clone());
        secrets.extend(
            refresh
                .clone()
                .map(|r| String::from_utf8(r).expect("stored in plain text")),
        );
        assert!(access.is_some(), "{source} has no access token after the run");
    }
    assert!(stored.len() >= 3, "{stored:?}");
    let rotated = stored
        .iter()
        .find(|(s, _, _)| s == "roubler")
        .and_then(|(_, _, r)| r.clone());
    assert_ne!(
        rotated.map(|r| String::from_utf8(r).unwrap()),
        grant.refresh_token,
        "the run rotated Roubler's refresh token"
    );
    // A trace log that large proves the scan had something to look at.
    assert!(printed.len() > 10_000, "{} bytes printed", printed.len());
    for (index, secret) in secrets.iter().enumerate().filter(|(_, s)| s.len() >= 6) {
        if let Some(at) = printed.find(secret.as_str()) {
            let start = printed.floor_char_boundary(at.saturating_sub(300));
            panic!("secret #{index} was printed after:\n{}", &printed[start..at]);
        }
    }
}

/// The last lines of a long output.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
