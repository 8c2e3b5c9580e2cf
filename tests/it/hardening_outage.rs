//! Database outages, on a private embedded PostgreSQL server that the tests stop and start (the
//! shared server other tests use is never touched): a refresh whose rotated token cannot be
//! stored keeps it in memory and pauses the source instead of refreshing again, and the service
//! binary rides out an outage — it stays up, `/readyz` says not-ready meanwhile, the runs the
//! outage hit are recorded (failed, or interrupted if cut off mid-window) when the database is
//! back, and the next scheduled runs succeed with the Roubler refresh chain intact.
//!
//! The service test stops the database for `OUTAGE_SECONDS` (default 10, to keep `cargo test`
//! short); `scripts/outage.sh` runs it with the full 30 s.

use crate::support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use reporting_etl::auth::{self, AuthError};
use reporting_etl::store::{self, EmbeddedPostgres};
use sandbox::faults::FaultPlan;
use sandbox::{Sandbox, SandboxOptions};
use sqlx::PgPool;

async fn seed_roubler(pool: &PgPool, sandbox: &Sandbox, expired: bool) {
    let grant = sandbox.roubler.grant_tokens();
    let lifetime = if expired { -1.0 } else { grant.expires_in as f64 };
    support::seed_refresh_chain(pool, "roubler", &grant, lifetime).await;
}

/// A token endpoint in front of the sandbox's that stops the database the first time it is
/// asked, before forwarding: the vendor rotates the refresh token, the service cannot store it.
#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    stop_on_first: Arc<Mutex<Option<EmbeddedPostgres>>>,
}

async fn proxy_token(State(proxy): State<Proxy>, headers: HeaderMap, body: Bytes) -> Response {
    let server = proxy.stop_on_first.lock().unwrap().take();
    if let Some(server) = server {
        support::stop_server(server).await;
    }
    let mut request = proxy.http.post(&proxy.upstream).body(body.to_vec());
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = request.send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let bytes = answer.bytes().await.unwrap();
    (status, [(header::CONTENT_TYPE, content_type)], bytes.to_vec()).into_response()
}

async fn serve_proxy(proxy: Proxy) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/token", axum::routing::post(proxy_token))
        .with_state(proxy);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_refresh_token_that_cannot_be_stored_is_held_in_memory_and_the_source_pauses_until_it_is() {
    let mut db = support::PrivateDb::start().await;
    let pool = store::connect(&db.url, 4).await.unwrap();
    store::migrate(&pool).await.unwrap();
    let mut options = SandboxOptions::default();
    options.roubler.access_token_lifetime = Duration::from_secs(3);
    let sandbox = Sandbox::start(options).await.unwrap();
    seed_roubler(&pool, &sandbox, true).await;

    let proxy_url = serve_proxy(Proxy {
        upstream: sandbox.roubler.token_url.clone(),
        http: reqwest::Client::new(),
        stop_on_first: Arc::new(Mutex::new(db.server.take())),
    })
    .await;
    let text = support::sandbox_config(&sandbox, &db.url, "").replace(
        &format!("token_url = \"{}\"", sandbox.roubler.token_url),
        &format!("token_url = \"{proxy_url}\""),
    );
    let (settings, _file) = support::load_config(&text);
    let registry = auth::build(&settings, pool.clone());
    let roubler = registry["roubler"].clone();

    // The refresh happens; the database goes away before the rotated token is committed.
    let credential = roubler
        .credential()
        .await
        .expect("the new access token is used although it could not be stored");
    let auth::Credential::Bearer(token) = &credential else {
        panic!("Roubler uses bearer tokens")
    };
    assert!(sandbox.roubler.auth.access_token_is_valid(token.secret()));
    assert!(roubler.has_pending_tokens().await);
    assert_eq!(sandbox.roubler.counts().refreshes, 1);
    // While it lasts, the in-memory token is handed out without the database.
    assert_eq!(roubler.credential().await.unwrap(), credential);

    // Used up while the database is still down: paused, and nothing is refreshed. Waits for the
    // held token's lifetime to run out, asking as a caller would.
    let paused = support::wait_for(
        "the held access token to be used up",
        Duration::from_secs(30),
        || async { roubler.credential().await.err() },
    )
    .await;
    assert!(matches!(paused, AuthError::Storage { .. }), "{paused}");
    assert!(paused.is_retryable());
    assert!(paused.to_string().contains("paused"), "{paused}");
    assert!(roubler.has_pending_tokens().await);
    assert_eq!(
        sandbox.roubler.counts().refreshes,
        1,
        "a refresh was sent while the rotated token waited to be stored"
    );

    // Back: the held tokens are stored first, then the chain continues from the new token.
    db.start_again().await;
    let renewed = roubler
        .credential()
        .await
        .expect("renews after the database is back");
    assert_ne!(renewed, credential);
    assert!(!roubler.has_pending_tokens().await);
    let counts = sandbox.roubler.counts();
    assert_eq!(counts.refreshes, 2, "{counts:?}");
    assert_eq!(counts.reused_refresh_tokens, 0, "{counts:?}");
    assert_eq!(counts.revoked_chains, 0, "{counts:?}");
    assert_eq!(counts.token_errors, 0, "{counts:?}");
    let (status,): (String,) = sqlx::query_as("SELECT status FROM etl.tokens WHERE source = 'roubler'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "ok");
    pool.close().await;
    db.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get_status(http: &reqwest::Client, url: &str) -> Option<u16> {
    http.get(url).send().await.ok().map(|r| r.status().as_u16())
}

async fn succeeded_since(pool: &PgPool, job: &str, since: DateTime<Utc>) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM etl.runs WHERE job = $1 AND status = 'succeeded' AND started_at > $2",
    )
    .bind(job)
    .bind(since)
    .fetch_one(pool)
    .await
    .unwrap_or((0,));
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_service_rides_out_a_database_outage_records_the_failed_runs_and_resumes_its_schedules() {
    let outage = Duration::from_secs(support::knob("OUTAGE_SECONDS", 10));
    let mut db = support::PrivateDb::start().await;
    let pool = store::connect(&db.url, 2).await.unwrap();
    store::migrate(&pool).await.unwrap();
    let mut options = SandboxOptions::default();
    // Refreshes fall due every couple of seconds, so several fall into the outage.
    options.roubler.access_token_lifetime = Duration::from_secs(4);
    let sandbox = Sandbox::start(options).await.unwrap();
    seed_roubler(&pool, &sandbox, false).await;

    let port = free_port();
    let jobs = "
[jobs.fax]
source = \"retarus\"
dataset = \"fax_out_udr\"
schedule = \"*/2 * * * * *\"
lookback_minutes = 1

[jobs.locations]
source = \"roubler\"
dataset = \"locations\"
schedule = \"1/2 * * * * *\"
";
    let extra = format!("{jobs}\n[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 15\n");
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut child = tokio::process::Command::from(support::binary())
        .args(["run", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(logs.reopen().unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(logs.path()).unwrap_or_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");

    // Running normally first.
    let began = Utc::now() - chrono::Duration::seconds(1);
    let warmed = support::poll_for(Duration::from_secs(60), || async {
        (succeeded_since(&pool, "fax", began).await >= 2
            && succeeded_since(&pool, "locations", began).await >= 2)
            .then_some(())
    })
    .await;
    assert!(
        warmed.is_some(),
        "two succeeded runs of each job before the outage, within 60 s:\n{}",
        log()
    );
    assert_eq!(get_status(&http, &format!("{base}/readyz")).await, Some(200));
    let refreshes_before = sandbox.roubler.counts().refreshes;

    // Slow Roubler calls, so the database can go while a run is mid-window (its record says
    // `running` and its load transaction is open).
    sandbox.roubler.faults.set(FaultPlan {
        latency: Duration::from_secs(2),
        ..Default::default()
    });
    let in_flight = support::poll_for(Duration::from_secs(30), || async {
        sqlx::query_as::<_, (i64,)>(
            "SELECT id FROM etl.runs WHERE job = 'locations' AND status = 'running' LIMIT 1",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
        .map(|(id,)| id)
    })
    .await;
    let Some(in_flight) = in_flight else {
        panic!(
            "a `locations` run in flight to interrupt, within 30 s:\n{}",
            log()
        );
    };
    pool.close().await;
    db.stop().await;
    let stopped_at = Instant::now();
    let mut readyz = Vec::new();
    while stopped_at.elapsed() < outage {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the service died in the outage:\n{}",
            log()
        );
        assert_eq!(get_status(&http, &format!("{base}/healthz")).await, Some(200));
        readyz.push(get_status(&http, &format!("{base}/readyz")).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    db.start_again().await;
    let restarted = Utc::now();
    sandbox.roubler.faults.clear();
    assert!(
        readyz.contains(&Some(503)),
        "/readyz never said not-ready during the outage: {readyz:?}"
    );
    assert!(
        readyz.iter().all(|s| *s == Some(503)),
        "/readyz did not answer 503 promptly throughout the outage: {readyz:?}"
    );

    // Back: the next scheduled runs succeed and /readyz recovers.
    let pool = store::connect(&db.url, 2).await.unwrap();
    let recovered = support::poll_for(Duration::from_secs(60), || async {
        (succeeded_since(&pool, "fax", restarted).await >= 2
            && succeeded_since(&pool, "locations", restarted).await >= 2
            && get_status(&http, &format!("{base}/readyz")).await == Some(200))
        .then_some(())
    })
    .await;
    assert!(
        recovered.is_some(),
        "two succeeded runs of each job and /readyz 200 after the outage, within 60 s:\n{}",
        log()
    );
    // The outcomes the database missed are written by the runs that follow: wait for them.
    let left_running = || async {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT id, job FROM etl.runs WHERE status = 'running' AND started_at < $1",
        )
        .bind(restarted)
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    support::wait_until(
        "the missed outcomes to be written",
        Duration::from_secs(30),
        || async { left_running().await.is_empty() },
    )
    .await;
    let left_running = left_running().await;
    let failed: Vec<(String, String)> = sqlx::query_as(
        "SELECT job, coalesce(error, '') FROM etl.runs WHERE status IN ('failed', 'interrupted') ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let (in_flight_status, in_flight_error, in_flight_finished): (
        String,
        Option<String>,
        Option<DateTime<Utc>>,
    ) = sqlx::query_as("SELECT status, error, finished_at FROM etl.runs WHERE id = $1")
        .bind(in_flight)
        .fetch_one(&pool)
        .await
        .unwrap();
    let counts = sandbox.roubler.counts();
    let logs_now = log();
    println!("run {in_flight}, in flight when the database went: {in_flight_status} ({in_flight_error:?})");
    println!(
        "outage of {} s: /readyz {readyz:?}; {} failed run records; roubler refreshes {} before, {} after (reused {}, revoked {})",
        outage.as_secs(),
        failed.len(),
        refreshes_before,
        counts.refreshes,
        counts.reused_refresh_tokens,
        counts.revoked_chains
    );
    for (job, error) in &failed {
        println!("  failed {job}: {error}");
    }
    assert!(
        left_running.is_empty(),
        "runs left running: {left_running:?}\n{logs_now}"
    );
    // Cut off from the database mid-window: interrupted (nothing committed), not failed.
    assert_eq!(in_flight_status, "interrupted", "{in_flight_error:?}\n{logs_now}");
    // Recorded once the database was back, but stamped with when its window ended (in the
    // outage): it must not seem to have held its window until the record was written.
    let in_flight_finished = in_flight_finished.expect("finished");
    assert!(
        in_flight_finished < restarted,
        "run {in_flight} ended in the outage but is recorded finished at {in_flight_finished}, after the database came back at {restarted}"
    );
    assert!(
        !failed.is_empty(),
        "the outage left no failed or interrupted run record:\n{logs_now}"
    );
    assert!(
        logs_now.contains("database is back") || logs_now.contains("could not start"),
        "the outage's failures were not logged:\n{logs_now}"
    );
    assert_eq!(counts.reused_refresh_tokens, 0);
    assert_eq!(counts.revoked_chains, 0);
    assert!(
        counts.refreshes > refreshes_before,
        "the chain did not move on: {counts:?}"
    );
    let (status,): (String,) = sqlx::query_as("SELECT status FROM etl.tokens WHERE source = 'roubler'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "ok");

    // Every fax record of the loaded span is in the table exactly once.
    let (first, last): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT min(window_start), max(window_end) FROM etl.runs WHERE job = 'fax' AND status = 'succeeded'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let expected: usize = sandbox
        .retarus
        .customer_ids
        .iter()
        .map(|c| {
            sandbox
                .retarus
                .records(sandbox::retarus::RetarusReport::FaxOut, c, first, last)
                .len()
        })
        .sum();
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM retarus.fax_out_udr")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, expected);

    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within the grace period")
        .unwrap();
    assert!(status.success(), "{}", log());
    pool.close().await;
    db.stop().await;
}

/// A database that answers but refuses writes (`default_transaction_read_only`, as on a standby
/// after a failover) cannot record a run: `/readyz` says so within 10 s, and is ready again
/// within 10 s of writes working; the fires it refused are recorded `database` afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_says_read_only_while_the_database_refuses_writes() {
    let mut db = support::PrivateDb::start().await;
    let pool = store::connect(&db.url, 2).await.unwrap();
    store::migrate(&pool).await.unwrap();
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let port = free_port();
    let extra = format!(
        "
[jobs.fax]
source = \"retarus\"
dataset = \"fax_out_udr\"
schedule = \"*/2 * * * * *\"
lookback_minutes = 1

[server]
listen = \"127.0.0.1:{port}\"
"
    );
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, &extra));
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut child = support::spawn_service(file.path(), logs.path());
    let log = || std::fs::read_to_string(logs.path()).unwrap_or_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let readyz = || async {
        let response = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .ok()?;
        Some((
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        ))
    };
    let began = Utc::now() - chrono::Duration::seconds(1);
    support::wait_until("a first scheduled run", Duration::from_secs(60), || async {
        succeeded_since(&pool, "fax", began).await >= 1
    })
    .await;
    assert_eq!(readyz().await.map(|r| r.0), Some(200), "{}", log());

    // Every session, the service's pooled ones included, turns read-only at the reload.
    let admin = |on: bool| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("SET default_transaction_read_only = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            let statement = if on {
                "ALTER SYSTEM SET default_transaction_read_only = on"
            } else {
                "ALTER SYSTEM RESET default_transaction_read_only"
            };
            sqlx::query(statement).execute(&mut *conn).await.unwrap();
            sqlx::query("SELECT pg_reload_conf()")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    };
    admin(true).await;
    let turned = Instant::now();
    let read_only_at = Utc::now();
    let answer = support::wait_for("/readyz to say read-only", Duration::from_secs(10), || async {
        readyz().await.filter(|(status, _)| *status == 503)
    })
    .await;
    println!("/readyz 503 after {:?}: {}", turned.elapsed(), answer.1.trim());
    assert!(answer.1.contains("database read-only"), "{answer:?}");
    // Fires meanwhile cannot even create their records.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the service died:\n{}",
        log()
    );

    admin(false).await;
    let restored = Instant::now();
    support::wait_for("/readyz to be ready again", Duration::from_secs(10), || async {
        readyz().await.filter(|(status, _)| *status == 200)
    })
    .await;
    println!("/readyz 200 again after {:?}", restored.elapsed());
    // The refused fires are recorded once a run reaches the database again, as `database`.
    support::wait_until("the refused fires to be recorded", Duration::from_secs(30), || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM etl.runs WHERE job = 'fax' AND status = 'failed' AND error_kind = 'database' AND started_at > $1",
        )
        .bind(read_only_at)
        .fetch_one(&pool)
        .await
        .unwrap();
        n >= 1
    })
    .await;
    let (running,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM etl.runs WHERE status = 'running' AND started_at < $1")
            .bind(read_only_at)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(running, 0, "{}", log());
    let _ = child.start_kill();
    let _ = child.wait().await;
    pool.close().await;
    db.stop().await;
}
