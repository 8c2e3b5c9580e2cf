//! Auth against the sandbox vendors and real PostgreSQL: one token for many callers and
//! processes, Altrata's new-token-kills-old, Roubler's single-use refresh chain across restarts
//! and kills, `auth login` both ways, and no secret in any output.

use crate::support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reporting_etl::auth::{self, AuthError, AuthRegistry, Credential};
use reporting_etl::store;
use sandbox::{Sandbox, SandboxOptions};
use support::TestDb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn registry(text: &str) -> (AuthRegistry, sqlx::PgPool, tempfile::NamedTempFile) {
    let (settings, file) = support::load_config(text);
    let url = secrecy::ExposeSecret::expose_secret(settings.database.url.as_ref().unwrap()).to_owned();
    // Each registry gets its own pool, as a separate process would.
    let pool = store::connect(&url, 4).await.unwrap();
    (auth::build(&settings, pool.clone()), pool, file)
}

fn bearer(credential: &Credential) -> String {
    credential.authorization()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_for_a_retarus_token_cause_exactly_one_token_request() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (registry, _pool, _file) = registry(&support::sandbox_config(&sandbox, &db.url, "")).await;
    let provider = registry["retarus"].clone();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.credential().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(bearer(&task.await.unwrap().unwrap()));
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "all callers share one token");
    assert_eq!(sandbox.retarus.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_in_two_processes_cause_exactly_one_token_request_per_vendor() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let config = support::sandbox_config(&sandbox, &db.url, "");
    // Two independent providers with their own pools and caches: they meet only in etl.tokens,
    // exactly as two processes on one database do.
    let (first, _p1, _f1) = registry(&config).await;
    let (second, _p2, _f2) = registry(&config).await;
    for source in ["retarus", "altrata"] {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let provider = if i % 2 == 0 {
                    first[source].clone()
                } else {
                    second[source].clone()
                };
                tokio::spawn(async move { provider.credential().await.map(|c| bearer(&c)) })
            })
            .collect();
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.push(task.await.unwrap().unwrap());
        }
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), 1, "{source}: one token for both processes");
    }
    assert_eq!(sandbox.retarus.token_requests(), 1);
    assert_eq!(sandbox.altrata.tokens_issued(), 1);
}

/// Altrata kills the previous token whenever it issues a new one. Four workers, each restarting
/// (a fresh executor and token provider with its own pool, as a new process) every few seconds,
/// call through the executor over a compressed day of 3-second tokens: not one call may be
/// refused for a replaced token. Renewals wait for the calls in flight in their process (the
/// renewal gate) and every process keeps a quiet period before a renewal is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn altrata_workers_and_restarts_over_a_compressed_day_never_lose_a_call_to_a_replaced_token() {
    use reporting_etl::executor::{CallContext, Executor, ExecutorOptions, ScopeHeader};
    let mut options = SandboxOptions::default();
    options.altrata.token_lifetime = Duration::from_secs(3);
    options.altrata.rate_per_sec = 1000.0;
    options.altrata.burst = 1000;
    let sandbox = Sandbox::start(options).await.unwrap();
    // Every call spends 400 ms at the vendor with its token, so renewals land on calls in flight
    // (shorter than the 0.6 s quiet period of a 3-second token).
    sandbox.altrata.faults.set(sandbox::faults::FaultPlan {
        latency: Duration::from_millis(400),
        ..Default::default()
    });
    let db = TestDb::new().await;
    let config = Arc::new(support::sandbox_config(&sandbox, &db.url, ""));
    let altrata_id = sandbox.altrata.person_ids()[0].clone();
    let started = Instant::now();
    let run_for = Duration::from_secs(12);

    let workers: Vec<_> = (0..4u64)
        .map(|worker| {
            let config = config.clone();
            let altrata_id = altrata_id.clone();
            tokio::spawn(async move {
                let (mut calls, mut failed) = (0u32, Vec::new());
                while started.elapsed() < run_for {
                    let (mut settings, _file) = support::load_config(&config);
                    // The demo's 2 calls/s would make this a test of the limiter.
                    if let Some(altrata) = settings
                        .sources
                        .get_mut("altrata")
                        .and_then(|s| s.section_mut::<reporting_etl::vendors::altrata::AltrataSettings>())
                    {
                        altrata.rate_limit = Some(reporting_etl::config::RateLimit {
                            calls: 1000,
                            per_ms: 1000,
                        });
                    }
                    let (registry, pool, _file) = registry(&config).await;
                    let executor =
                        Executor::with_options(Arc::new(settings), registry, ExecutorOptions::default())
                            .expect("executor builds");
                    let life = Duration::from_millis(1500 + 700 * worker);
                    let born = Instant::now();
                    while born.elapsed() < life && started.elapsed() < run_for {
                        let answer = executor
                            .execute_raw(
                                &CallContext::new("altrata", "events"),
                                reporting_etl::vendors::altrata::EVENTS,
                                &ScopeHeader::None,
                                "query($id: String!) { events(altrataId: $id, pageInfo: {first: 1}) { items { eventId } } }",
                                serde_json::json!({ "id": altrata_id }),
                            )
                            .await;
                        calls += 1;
                        if let Err(error) = answer {
                            failed.push(error.to_string());
                        }
                        // The scenario: a worker calls every 40 ms, not back to back.
                        tokio::time::sleep(Duration::from_millis(40)).await;
                    }
                    pool.close().await;
                }
                (calls, failed)
            })
        })
        .collect();
    let (mut calls, mut failed) = (0, Vec::new());
    for worker in workers {
        let (c, f) = worker.await.unwrap();
        calls += c;
        failed.extend(f);
    }
    let issued = sandbox.altrata.tokens_issued();
    let stale = sandbox.altrata.stale_token_rejections();
    println!(
        "altrata: {calls} calls over {run_for:?}, {issued} tokens issued, {stale} calls refused for a replaced token"
    );
    assert_eq!(failed, Vec::<String>::new(), "calls that failed");
    assert_eq!(
        stale, 0,
        "calls the vendor refused because their token had been replaced ({issued} tokens issued)"
    );
    // 3-second tokens renewed ~0.6 s before expiry after a quiet period over 12 s: about 5 to 6;
    // never one per worker or restart.
    assert!(issued <= 8, "{issued} tokens for {run_for:?} of 3-second tokens");
    assert!(calls > 60, "only {calls} calls in {run_for:?}");
}

/// Runs `reporting-etl auth login roubler`, answering with the redirect the sandbox gives (pasted
/// on stdin, or through the loopback listener when `via_listener`). `tamper` alters the pasted URL.
async fn cli_login(
    config_path: &std::path::Path,
    via_listener: bool,
    tamper: Option<fn(String) -> String>,
) -> (bool, String) {
    let mut child = tokio::process::Command::from(support::binary())
        .args(["auth", "login", "roubler", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr_pipe, &mut text).await;
        text
    });
    let mut printed = String::new();
    let authorize_url = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if let Some(url) = line.trim().strip_prefix("http") {
            break format!("http{url}");
        }
    };
    // Wait until it waits for the redirect.
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("paste") {
            break;
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    if via_listener {
        // A browser: follows the redirect to our loopback listener.
        let page = reqwest::get(&authorize_url).await.unwrap();
        assert!(page.status().is_success(), "{}", page.status());
    } else {
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = no_redirects.get(&authorize_url).send().await.unwrap();
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let pasted = match tamper {
            Some(tamper) => tamper(location),
            None => location,
        };
        stdin.write_all(format!("{pasted}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }
    drop(stdin);
    let mut all = printed;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        all.push_str(&line);
        all.push('\n');
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    all.push_str(&stderr.await.unwrap());
    (status.success(), all)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sandbox config whose Roubler redirect goes to a free loopback port; written to a file.
fn login_config(sandbox: &Sandbox, db: &TestDb, extra: &str) -> (String, tempfile::NamedTempFile) {
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let text = support::sandbox_config(sandbox, &db.url, extra).replace(
        &format!("redirect_uri = \"{}\"", sandbox.roubler.redirect_uri),
        &format!("redirect_uri = \"{redirect}\""),
    );
    let (_, file) = support::load_config(&text);
    (text, file)
}

async fn stored_tokens(db: &TestDb, source: &str) -> Option<(Option<String>, Option<Vec<u8>>, bool, String)> {
    sqlx::query_as("SELECT access_token, refresh_token, refresh_token_encrypted, status FROM etl.tokens WHERE source = $1")
        .bind(source)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
}

fn assert_no_secrets(output: &str, secrets: &[String]) {
    for (index, secret) in secrets.iter().enumerate().filter(|(_, s)| s.len() >= 6) {
        if let Some(at) = output.find(secret.as_str()) {
            let context = &output[at.saturating_sub(200)..at];
            panic!("secret #{index} appeared in the output after: {context}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_login_works_through_the_loopback_listener() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (_, file) = login_config(&sandbox, &db, "");
    let (ok, output) = cli_login(file.path(), true, None).await;
    assert!(ok, "{output}");
    assert!(output.contains("Authorised `roubler`"), "{output}");
    let (access, refresh, _, status) = stored_tokens(&db, "roubler").await.unwrap();
    assert_eq!(status, "ok");
    let access = access.unwrap();
    let refresh = String::from_utf8(refresh.unwrap()).unwrap();
    assert_no_secrets(&output, &[access, refresh, sandbox.roubler.client_secret.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_login_works_with_a_pasted_url_and_encrypts_the_refresh_token() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (_, file) = login_config(
        &sandbox,
        &db,
        "[security]\ntoken_key = \"YXV0aC10ZXN0LWtleS1mb3ItcmVmcmVzaC10b2tlbnM=\"\n",
    );
    let (ok, output) = cli_login(file.path(), false, None).await;
    assert!(ok, "{output}");
    let (access, refresh, encrypted, _) = stored_tokens(&db, "roubler").await.unwrap();
    assert!(encrypted, "the refresh token is encrypted at rest");
    assert!(refresh.unwrap().len() > 28, "nonce + ciphertext + tag");
    assert_no_secrets(&output, &[access.unwrap(), sandbox.roubler.client_secret.clone()]);
    // The encrypted token works: a refresh through the CLI succeeds.
    let refreshed = support::binary()
        .args(["auth", "refresh", "roubler", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        refreshed.status.success(),
        "{}",
        String::from_utf8_lossy(&refreshed.stderr)
    );
    assert_eq!(sandbox.roubler.counts().refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_login_refuses_a_wrong_state_and_stores_nothing() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (_, file) = login_config(&sandbox, &db, "");
    let (ok, output) = cli_login(
        file.path(),
        false,
        Some(|url| url.replace("state=", "state=forged")),
    )
    .await;
    assert!(!ok, "{output}");
    assert!(output.contains("state does not match"), "{output}");
    let stored = stored_tokens(&db, "roubler").await;
    assert!(
        stored.is_none_or(|(access, refresh, _, _)| access.is_none() && refresh.is_none()),
        "tokens were stored"
    );
    assert_eq!(
        sandbox.roubler.counts().token_grants,
        0,
        "the code was never exchanged"
    );
}

async fn cli_refresh(config_path: &std::path::Path) -> std::process::Output {
    tokio::process::Command::from(support::binary())
        .args(["auth", "refresh", "roubler", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "debug")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roubler_refreshes_one_process_each_keep_the_chain_alive() {
    // 50 in the test command (each round is a process of the debug binary, ~0.4 s);
    // `REFRESH_ROUNDS=200` for the long form (tests/README.md).
    let rounds: u32 = support::knob("REFRESH_ROUNDS", 50);
    assert!(
        rounds >= 2,
        "REFRESH_ROUNDS={rounds}: a chain needs at least 2 refreshes"
    );
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (_, file) = login_config(&sandbox, &db, "");
    let (ok, output) = cli_login(file.path(), false, None).await;
    assert!(ok, "{output}");
    let mut outputs = output;
    let mut secrets = vec![sandbox.roubler.client_secret.clone()];
    for round in 0..rounds {
        let refreshed = cli_refresh(file.path()).await;
        outputs.push_str(&String::from_utf8_lossy(&refreshed.stdout));
        outputs.push_str(&String::from_utf8_lossy(&refreshed.stderr));
        assert!(
            refreshed.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&refreshed.stderr)
        );
        let (access, refresh, _, _) = stored_tokens(&db, "roubler").await.unwrap();
        secrets.push(access.unwrap());
        secrets.push(String::from_utf8(refresh.unwrap()).unwrap());
    }
    let counts = sandbox.roubler.counts();
    println!(
        "roubler: {} refreshes, {} reused refresh tokens, {} revoked chains",
        counts.refreshes, counts.reused_refresh_tokens, counts.revoked_chains
    );
    assert_eq!(counts.refreshes, u64::from(rounds));
    assert_eq!(counts.reused_refresh_tokens, 0);
    assert_eq!(counts.revoked_chains, 0);
    assert_no_secrets(&outputs, &secrets);
}

/// Where a SIGKILL landed in one `auth refresh`, judged from what the sandbox and the database saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KillLanded {
    /// The sandbox granted no refresh: the old refresh token is still unused and stored.
    BeforeTheRefreshWasSent,
    /// The sandbox granted a refresh and the new tokens were stored.
    AfterTheNewTokensWereStored,
    /// The sandbox granted a refresh (using up the single-use refresh token) but the process died
    /// before storing the new one. Roubler's refresh tokens are single-use without grace, so no
    /// client can avoid losing the chain here: the only honest outcome is a clear re-authorise error.
    BetweenTheGrantAndTheStore,
}

/// When the test sends SIGKILL to an `auth refresh`.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Right after spawning: before it can have sent anything.
    Once,
    /// Once the sandbox granted the refresh, its answer held back: the rotated token is in flight.
    AfterTheGrant,
    /// Once the new tokens are in `etl.tokens`.
    AfterTheStore,
    /// After a random delay, spread over a whole refresh.
    After(Duration),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_killed_during_refresh_breaks_the_chain_only_when_killed_between_grant_and_store() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (text, _) = login_config(&sandbox, &db, "");
    // The processes under test name their connections, so the test can wait for PostgreSQL to
    // have finished with a killed one (a COMMIT it sent may still be applied after the kill).
    let text = text.replace(
        &format!("url = \"{}\"", db.url),
        &format!("url = \"{}?application_name=refresh_under_test\"", db.url),
    );
    let (_, file) = support::load_config(&text);
    let (ok, output) = cli_login(file.path(), false, None).await;
    assert!(ok, "{output}");
    // How long a whole refresh takes here and now, to spread random kills over all of it.
    let started = Instant::now();
    assert!(cli_refresh(file.path()).await.status.success());
    let refresh_takes = started.elapsed();

    let mut kills = Vec::new();
    for _ in 0..5 {
        kills.extend([KillAt::Once, KillAt::AfterTheGrant, KillAt::AfterTheStore]);
    }
    for _ in 0..15 {
        kills.push(KillAt::After(
            refresh_takes.mul_f64(rand::rng().random_range(0.0..1.2)),
        ));
    }
    let mut landed = std::collections::HashMap::<KillLanded, usize>::new();
    for (kill, at) in kills.iter().copied().enumerate() {
        let refresh_before = stored_tokens(&db, "roubler").await.unwrap().1;
        let refreshes_before = sandbox.roubler.counts().refreshes;
        sandbox
            .roubler
            .hold_granted_answers(matches!(at, KillAt::AfterTheGrant));
        let mut child = tokio::process::Command::from(support::binary())
            .args(["auth", "refresh", "roubler", "--config"])
            .arg(file.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        match at {
            KillAt::Once => {}
            KillAt::AfterTheGrant => {
                support::wait_until("the refresh to be granted", Duration::from_secs(30), || async {
                    sandbox.roubler.counts().refreshes > refreshes_before
                })
                .await;
            }
            KillAt::AfterTheStore => {
                support::wait_until("the new tokens to be stored", Duration::from_secs(30), || async {
                    stored_tokens(&db, "roubler").await.unwrap().1 != refresh_before
                })
                .await;
            }
            // Not a wait for an event: the randomness of the moment is the point.
            KillAt::After(delay) => tokio::time::sleep(delay).await,
        }
        let _ = child.start_kill(); // SIGKILL
        let _ = child.wait().await;
        sandbox.roubler.hold_granted_answers(false);
        support::wait_until(
            "the killed process's connections to close",
            Duration::from_secs(30),
            || async {
                let open: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'refresh_under_test'",
                )
                .fetch_one(&db.pool)
                .await
                .unwrap();
                open == 0
            },
        )
        .await;

        let granted = sandbox.roubler.counts().refreshes - refreshes_before;
        let stored = stored_tokens(&db, "roubler").await.unwrap().1 != refresh_before;
        let case = match (granted, stored) {
            (0, false) => KillLanded::BeforeTheRefreshWasSent,
            (1, true) => KillLanded::AfterTheNewTokensWereStored,
            (1, false) => KillLanded::BetweenTheGrantAndTheStore,
            other => panic!(
                "kill {kill} ({at:?}): impossible outcome (refreshes granted, tokens stored) = {other:?}"
            ),
        };
        let expected = match at {
            KillAt::Once => Some(KillLanded::BeforeTheRefreshWasSent),
            KillAt::AfterTheGrant => Some(KillLanded::BetweenTheGrantAndTheStore),
            KillAt::AfterTheStore => Some(KillLanded::AfterTheNewTokensWereStored),
            KillAt::After(_) => None,
        };
        assert!(
            expected.is_none_or(|e| e == case),
            "kill {kill} ({at:?}) landed {case:?}"
        );
        *landed.entry(case).or_default() += 1;

        let after = cli_refresh(file.path()).await;
        let stderr = String::from_utf8_lossy(&after.stderr);
        if case == KillLanded::BetweenTheGrantAndTheStore {
            assert!(
                !after.status.success(),
                "kill {kill}: a used-up refresh token worked"
            );
            assert!(
                stderr.contains("re-authorise with `reporting-etl auth login roubler`"),
                "kill {kill}: unclear failure: {stderr}"
            );
            let (ok, output) = cli_login(file.path(), false, None).await;
            assert!(ok, "{output}");
        } else {
            assert!(
                after.status.success(),
                "kill {kill} ({at:?}) landed {case:?}, yet the chain broke: {stderr}"
            );
        }
    }
    let counts = sandbox.roubler.counts();
    println!(
        "roubler kill test: a refresh takes {refresh_takes:.2?}; {} kills landed {landed:?}; sandbox saw {} refreshes, {} reused tokens",
        kills.len(),
        counts.refreshes,
        counts.reused_refresh_tokens
    );
    // Only a kill between grant and store may break the chain, and each one that did shows up as
    // exactly one reuse of a used-up token (the next refresh): nothing else was ever reused.
    assert_eq!(
        counts.reused_refresh_tokens as usize,
        landed[&KillLanded::BetweenTheGrantAndTheStore]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_refresh_token_asks_for_reauthorisation_and_is_never_retried() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let (text, file) = login_config(&sandbox, &db, "");
    let (ok, output) = cli_login(file.path(), false, None).await;
    assert!(ok, "{output}");
    sandbox.roubler.revoke_all();
    sandbox.roubler.expire_access_tokens();
    let (registry, _pool, _f) = registry(&text).await;
    let provider = registry["roubler"].clone();
    let stored = stored_tokens(&db, "roubler").await.unwrap().0.unwrap();
    provider
        .rejected(&Credential::Bearer(auth::AccessToken::new(stored)))
        .await
        .unwrap();
    let error = provider.credential().await.unwrap_err();
    assert!(matches!(error, AuthError::Reauthorize { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("re-authorise with `reporting-etl auth login roubler`"),
        "{error}"
    );
    let errors_before = sandbox.roubler.counts().token_errors;
    for _ in 0..5 {
        assert!(matches!(
            provider.credential().await,
            Err(AuthError::Reauthorize { .. })
        ));
    }
    assert_eq!(
        sandbox.roubler.counts().token_errors,
        errors_before,
        "a refused refresh token was retried"
    );
    let status = support::binary()
        .args(["auth", "status", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains("re-authorise with `reporting-etl auth login roubler`"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_service_processes_starting_together_request_one_token_per_vendor() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let db = TestDb::new().await;
    let jobs = "
[jobs.fax_in]
source = \"retarus\"
dataset = \"fax_in_udr\"
schedule = \"0 0 0 * * *\"
[jobs.fax_out]
source = \"retarus\"
dataset = \"fax_out_udr\"
schedule = \"0 0 0 * * *\"
[jobs.events]
source = \"altrata\"
dataset = \"events\"
schedule = \"0 0 0 * * *\"
[jobs.profiles]
source = \"altrata\"
dataset = \"profiles\"
schedule = \"0 0 0 * * *\"
";
    let (_, file) = support::load_config(&support::sandbox_config(&sandbox, &db.url, jobs));
    // Two real processes, each with its own jobs of the same two sources, started together:
    // they meet only in etl.tokens.
    let spawn = |jobs: [&str; 2]| {
        let mut command = tokio::process::Command::from(support::binary());
        command
            .args(["run", "--once", "--job", jobs[0], "--job", jobs[1], "--config"])
            .arg(file.path());
        command.output()
    };
    let (first, second) = tokio::join!(spawn(["fax_in", "events"]), spawn(["fax_out", "profiles"]));
    for output in [first.unwrap(), second.unwrap()] {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(sandbox.retarus.token_requests(), 1, "Retarus tokens requested");
    assert_eq!(sandbox.altrata.tokens_issued(), 1, "Altrata tokens issued");
    assert_eq!(sandbox.altrata.stale_token_rejections(), 0);
}
