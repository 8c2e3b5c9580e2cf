//! Bad input from both ends: malformed configurations and malformed upstream answers.
//!
//! Configurations: every case goes through the real loader (and a handful through the binary)
//! and must be refused with the offending key and, when it is not a secret, the value — never a
//! panic, never a secret in the message.
//!
//! Upstream answers: the sandbox replaces a vendor's next answers with raw bytes
//! ([`sandbox::faults::RawAnswer`]), usually after letting the first pages of a paged load
//! through. Every case must end in a clear error naming what was being fetched and why (a
//! transient-looking answer only after the retry budget is spent), must not panic, and must leave
//! the window's previous rows exactly as they were (the load runs in one transaction, as in the
//! runner).

use crate::support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, DurationRound, Utc};
use reporting_etl::catalog::SourceKind;
use reporting_etl::config::{ConfigError, ConfigSource, Scope, Settings};
use reporting_etl::datasets::window::{Window, utc_midnight};
use reporting_etl::datasets::{LoadFigures, LoadRequest, ScopeTarget, Tuning};
use reporting_etl::executor::{CallContext, Executor, ExecutorOptions};
use reporting_etl::vendors;
use reporting_etl::vendors::{altrata, retarus, retently, roubler};
use sandbox::faults::{Faults, RawAnswer};
use sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;
use support::TestDb;

// ---------------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------------

/// Secrets of [`BASE`]: no error message may contain them.
const SECRETS: &[&str] = &[
    "aGFyZGVuaW5nLXRva2VuLWtleS00NzExLTMyYnl0ZXM=",
    "retarus-secret-000123",
    "roubler-secret-xyz",
    "altrata-password-777",
    "altrata-api-key-888",
    "retently-api-key-999",
    "pg-password-31337",
];

const BASE: &str = r#"
[database]
pool_size = 4

[server]
listen = "127.0.0.1:9187"
shutdown_grace_secs = 30

[log]
format = "human"
level = "info"

[security]
token_key = "aGFyZGVuaW5nLXRva2VuLWtleS00NzExLTMyYnl0ZXM="

[sources.retarus]
kind = "retarus"
client_id = "client-1"
client_secret = "retarus-secret-000123"
customer_ids = ["99999"]

[sources.roubler]
kind = "roubler"
graphql_url = "https://graphql.au.roubler.com/graphql"
client_id = "roubler-client"
client_secret = "roubler-secret-xyz"

[sources.altrata]
kind = "altrata"
username = "svc"
password = "altrata-password-777"
api_key = "altrata-api-key-888"

[sources.retently]
kind = "retently"
api_key = "retently-api-key-999"

[jobs.fax]
source = "retarus"
dataset = "fax_out_udr"
schedule = "0 */15 * * * *"
time_zone = "Europe/Berlin"
"#;

/// One malformed configuration and what its error must say.
struct ConfigCase {
    name: &'static str,
    text: String,
    /// The reported key must start with this.
    key: &'static str,
    /// The message must contain each of these (the offending value, the missing field…).
    says: Vec<&'static str>,
}

fn case(name: &'static str, text: String, key: &'static str, says: &[&'static str]) -> ConfigCase {
    ConfigCase {
        name,
        text,
        key,
        says: says.to_vec(),
    }
}

/// [`BASE`] with `from` replaced by `to` (which must be there).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "the base has no `{from}`");
    BASE.replacen(from, to, 1)
}

/// [`BASE`] with `text` appended.
fn plus(text: &str) -> String {
    format!("{BASE}\n{text}\n")
}

fn secret_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

fn config_cases(empty: &std::path::Path, full: &std::path::Path) -> Vec<ConfigCase> {
    let empty = empty.display().to_string();
    let full = full.display().to_string();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let empty_path = leak(empty.clone());
    vec![
        // Wrong types.
        case(
            "a pool size that is text",
            edit("pool_size = 4", "pool_size = \"many\""),
            "database.pool_size",
            &["many"],
        ),
        case(
            "a grace period that is text",
            edit("shutdown_grace_secs = 30", "shutdown_grace_secs = \"soon\""),
            "server.shutdown_grace_secs",
            &["soon"],
        ),
        case(
            "enabled that is not a boolean",
            plus(
                "[jobs.other]\nsource = \"retarus\"\ndataset = \"sms_in_udr\"\nschedule = \"0 0 * * * *\"\nenabled = \"sometimes\"",
            ),
            "jobs.other.enabled",
            &["sometimes"],
        ),
        case(
            "a rate limit that is text",
            edit(
                "customer_ids = [\"99999\"]",
                "customer_ids = [\"99999\"]\nrate_limit = \"fast\"",
            ),
            "sources.retarus.rate_limit",
            &["fast"],
        ),
        case(
            "a listen address that is not an address",
            edit("listen = \"127.0.0.1:9187\"", "listen = \"localhost\""),
            "server.listen",
            &["localhost"],
        ),
        case(
            "watch_ids that are a number",
            edit("username = \"svc\"", "username = \"svc\"\nwatch_ids = 5"),
            "sources.altrata.watch_ids",
            &["5"],
        ),
        case(
            "a log format nobody knows",
            edit("format = \"human\"", "format = \"xml\""),
            "log.format",
            &["xml"],
        ),
        case(
            "a window policy nobody knows",
            edit(
                "time_zone = \"Europe/Berlin\"",
                "time_zone = \"Europe/Berlin\"\nwindow = \"weekly\"",
            ),
            "jobs.fax.window",
            &["weekly"],
        ),
        // Unknown keys at every level.
        case(
            "an unknown top-level section",
            plus("[databse]\nurl = \"x\""),
            "",
            &["databse"],
        ),
        case(
            "an unknown database key",
            edit("pool_size = 4", "pool_size = 4\npool_sise = 5"),
            "database.pool_sise",
            &["unknown field"],
        ),
        case(
            "an unknown server key",
            edit(
                "shutdown_grace_secs = 30",
                "shutdown_grace_secs = 30\nlisten_on = 1",
            ),
            "server.listen_on",
            &["unknown field"],
        ),
        case(
            "an unknown log key",
            edit("level = \"info\"", "level = \"info\"\nlevle = \"debug\""),
            "log.levle",
            &["unknown field"],
        ),
        case(
            "an unknown security key",
            edit("[security]", "[security]\ntoken_kee = \"x\""),
            "security.token_kee",
            &["unknown field"],
        ),
        case(
            "an unknown source key",
            edit(
                "client_id = \"client-1\"",
                "client_id = \"client-1\"\nclient_idd = \"x\"",
            ),
            "sources.retarus.client_idd",
            &["unknown field"],
        ),
        case(
            "an unknown job key",
            edit(
                "time_zone = \"Europe/Berlin\"",
                "time_zone = \"Europe/Berlin\"\nschedul = \"x\"",
            ),
            "jobs.fax.schedul",
            &["unknown field"],
        ),
        case(
            "an unknown rate-limit key",
            edit(
                "customer_ids = [\"99999\"]",
                "customer_ids = [\"99999\"]\nrate_limit = { calls = 5, per_ms = 1000, burst = 3 }",
            ),
            "sources.retarus.rate_limit",
            &["burst"],
        ),
        // Missing required fields.
        case(
            "a job without a schedule",
            edit("schedule = \"0 */15 * * * *\"\n", ""),
            "jobs.fax",
            &["schedule"],
        ),
        case(
            "a job without a source",
            edit("source = \"retarus\"\n", ""),
            "jobs.fax",
            &["source"],
        ),
        case(
            "a source without a kind",
            edit("kind = \"retently\"\n", ""),
            "sources.retently",
            &["kind"],
        ),
        case(
            "a Retarus source without a client id",
            edit("client_id = \"client-1\"\n", ""),
            "sources.retarus",
            &["client_id"],
        ),
        case(
            "a Roubler source without its regional endpoint",
            edit("graphql_url = \"https://graphql.au.roubler.com/graphql\"\n", ""),
            "sources.roubler",
            &["graphql_url"],
        ),
        case(
            "an Altrata source without a password",
            edit("password = \"altrata-password-777\"\n", ""),
            "sources.altrata.password",
            &["missing"],
        ),
        case(
            "a Retently source with neither key nor OAuth client",
            edit("api_key = \"retently-api-key-999\"\n", ""),
            "sources.retently.api_key",
            &["missing"],
        ),
        case(
            "a Retarus source with no customer ids",
            edit("customer_ids = [\"99999\"]", "customer_ids = []"),
            "sources.retarus.customer_ids",
            &["empty"],
        ),
        // Bad URLs, crons and zones.
        case(
            "a URL without a scheme",
            edit(
                "https://graphql.au.roubler.com/graphql",
                "graphql.au.roubler.com/graphql",
            ),
            "sources.roubler.graphql_url",
            &["graphql.au.roubler.com/graphql"],
        ),
        case(
            "an ftp URL",
            edit(
                "username = \"svc\"",
                "username = \"svc\"\ntoken_url = \"ftp://auth.example.com/token\"",
            ),
            "sources.altrata.token_url",
            &["ftp://auth.example.com/token"],
        ),
        case(
            "a URL without a host",
            edit(
                "kind = \"retently\"",
                "kind = \"retently\"\nbase_url = \"https://\"",
            ),
            "sources.retently.base_url",
            &["https://"],
        ),
        case(
            "an http endpoint without allow_http",
            edit(
                "https://graphql.au.roubler.com/graphql",
                "http://graphql.au.roubler.com/graphql",
            ),
            "sources.roubler.graphql_url",
            &["http://graphql.au.roubler.com/graphql", "allow_http"],
        ),
        case(
            "an http token URL without allow_http",
            edit(
                "client_id = \"client-1\"",
                "client_id = \"client-1\"\ntoken_url = \"http://auth.example.com/token\"",
            ),
            "sources.retarus.token_url",
            &["http://auth.example.com/token", "https"],
        ),
        case(
            "a five-field cron",
            edit("0 */15 * * * *", "*/15 * * * *"),
            "jobs.fax.schedule",
            &["`*/15 * * * *`"],
        ),
        case(
            "a cron field out of range",
            edit("0 */15 * * * *", "0 0 25 * * *"),
            "jobs.fax.schedule",
            &["`0 0 25 * * *`"],
        ),
        case(
            "a cron in words",
            edit("0 */15 * * * *", "every day at noon"),
            "jobs.fax.schedule",
            &["every day at noon"],
        ),
        case(
            "a misspelt zone",
            edit("Europe/Berlin", "Europe/Berln"),
            "jobs.fax.time_zone",
            &["`Europe/Berln`"],
        ),
        case(
            "an offset instead of a zone",
            edit("Europe/Berlin", "+02:00"),
            "jobs.fax.time_zone",
            &["`+02:00`"],
        ),
        // Secrets from files.
        case(
            "an empty secrets file",
            edit(
                "client_secret = \"retarus-secret-000123\"",
                &format!("client_secret_file = \"{empty}\""),
            ),
            "sources.retarus.client_secret",
            &["empty", empty_path],
        ),
        case(
            "a missing secrets file",
            edit(
                "password = \"altrata-password-777\"",
                "password_file = \"/nonexistent/altrata-password\"",
            ),
            "sources.altrata.password",
            &["/nonexistent/altrata-password"],
        ),
        case(
            "a secret both inline and as a file",
            edit(
                "client_secret = \"roubler-secret-xyz\"",
                &format!("client_secret = \"roubler-secret-xyz\"\nclient_secret_file = \"{full}\""),
            ),
            "sources.roubler.client_secret",
            &["both"],
        ),
        case(
            "a token key both inline and as a file",
            edit("[security]", &format!("[security]\ntoken_key_file = \"{full}\"")),
            "security.token_key",
            &["both"],
        ),
        case(
            "an empty database URL file",
            edit("[database]", &format!("[database]\nurl_file = \"{empty}\"")),
            "database.url",
            &["empty"],
        ),
        // Names.
        case(
            "a source name with a space",
            BASE.replace("[sources.retarus]", "[sources.\"Retarus EU\"]")
                .replace("source = \"retarus\"", "source = \"Retarus EU\""),
            "sources.Retarus EU",
            &["`Retarus EU`"],
        ),
        case(
            "a job name with punctuation",
            edit("[jobs.fax]", "[jobs.\"fax!\"]"),
            "jobs.fax!",
            &["`fax!`"],
        ),
        case(
            "a job naming a missing source",
            edit("source = \"retarus\"", "source = \"retarsu\""),
            "jobs.fax.source",
            &["`retarsu`"],
        ),
        case(
            "a job naming an unknown dataset",
            edit("fax_out_udr", "fax_udr"),
            "jobs.fax.dataset",
            &["`fax_udr`"],
        ),
        case(
            "an unknown source kind",
            edit("kind = \"retently\"", "kind = \"retentlyy\""),
            "sources.retently",
            &["retentlyy"],
        ),
        // Negative and zero numbers.
        case(
            "a negative pool size",
            edit("pool_size = 4", "pool_size = -1"),
            "database.pool_size",
            &["-1"],
        ),
        case(
            "a zero pool size",
            edit("pool_size = 4", "pool_size = 0"),
            "database.pool_size",
            &["`0`"],
        ),
        case(
            "a rate limit of zero calls",
            edit(
                "customer_ids = [\"99999\"]",
                "customer_ids = [\"99999\"]\nrate_limit = { calls = 0, per_ms = 1000 }",
            ),
            "sources.retarus.rate_limit.calls",
            &["`0` is out of range"],
        ),
        case(
            "a negative rate-limit period",
            edit(
                "customer_ids = [\"99999\"]",
                "customer_ids = [\"99999\"]\nrate_limit = { calls = 5, per_ms = -1000 }",
            ),
            "sources.retarus.rate_limit",
            &["-1000"],
        ),
        case(
            "a negative lookback",
            edit(
                "time_zone = \"Europe/Berlin\"",
                "time_zone = \"Europe/Berlin\"\nlookback_minutes = -10",
            ),
            "jobs.fax.lookback_minutes",
            &["-10"],
        ),
        case(
            "a negative grace period",
            edit("shutdown_grace_secs = 30", "shutdown_grace_secs = -5"),
            "server.shutdown_grace_secs",
            &["-5"],
        ),
        // Window policies.
        case(
            "a trailing window without trailing_days",
            edit(
                "time_zone = \"Europe/Berlin\"",
                "time_zone = \"Europe/Berlin\"\nwindow = \"trailing\"",
            ),
            "jobs.fax.trailing_days",
            &["required"],
        ),
        case(
            "a trailing window of zero days",
            edit(
                "time_zone = \"Europe/Berlin\"",
                "time_zone = \"Europe/Berlin\"\nwindow = \"trailing\"\ntrailing_days = 0",
            ),
            "jobs.fax.trailing_days",
            &["`0` is out of range"],
        ),
        case(
            "an incremental window on a snapshot dataset",
            plus(
                "[jobs.staff]\nsource = \"roubler\"\ndataset = \"employees\"\nschedule = \"0 0 * * * *\"\nwindow = \"incremental\"",
            ),
            "jobs.staff.window",
            &["`incremental`"],
        ),
        case(
            "a start date that is not a date",
            edit(
                "time_zone = \"Europe/Berlin\"",
                "time_zone = \"Europe/Berlin\"\nstart = \"yesterday\"",
            ),
            "jobs.fax.start",
            &["yesterday"],
        ),
        // Other values.
        case(
            "a database URL of another scheme, with a password",
            edit(
                "[database]",
                "[database]\nurl = \"mysql://etl:pg-password-31337@db.example.com/etl\"",
            ),
            "database.url",
            &["mysql"],
        ),
        case(
            "a log level that is not a filter",
            edit("level = \"info\"", "level = \"info,[=\""),
            "log.level",
            &["info,[="],
        ),
        case(
            "a TOML syntax error",
            edit("pool_size = 4", "pool_size = "),
            "database.pool_size",
            &["line 3"],
        ),
    ]
}

fn load_text(text: &str, env: HashMap<String, String>) -> Result<Settings, ConfigError> {
    let file = secret_file(text);
    reporting_etl::app::load_settings(&ConfigSource {
        path: Some(file.path().to_path_buf()),
        env: Some(env),
    })
}

fn assert_no_secret(text: &str, context: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{context}: a secret leaked into: {text}");
    }
}

#[test]
fn the_base_configuration_of_the_malformed_cases_is_valid() {
    load_text(BASE, HashMap::new()).expect("the base configuration loads");
    // The stricter readers of dates, addresses and lists still take every valid spelling.
    for (from, to) in [
        (
            "time_zone = \"Europe/Berlin\"",
            "time_zone = \"Europe/Berlin\"\nstart = \"2025-01-31\"",
        ),
        (
            "time_zone = \"Europe/Berlin\"",
            "time_zone = \"Europe/Berlin\"\nstart = 2025-01-31",
        ),
        ("listen = \"127.0.0.1:9187\"", "listen = \"[::1]:9187\""),
        ("customer_ids = [\"99999\"]", "customer_ids = \"99999, 88888\""),
    ] {
        let settings = load_text(&edit(from, to), HashMap::new()).unwrap_or_else(|e| panic!("{to}: {e}"));
        if to.contains("start") {
            assert_eq!(settings.jobs["fax"].start.unwrap().to_string(), "2025-01-31");
        }
    }
}

#[test]
fn every_malformed_configuration_is_refused_naming_its_key_and_value_without_a_panic() {
    let empty = secret_file("\n");
    let full = secret_file("from-a-file-555\n");
    let cases = config_cases(empty.path(), full.path());
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let result = std::panic::catch_unwind(|| load_text(&case.text, HashMap::new()));
        let error = match result {
            Err(_) => {
                failures.push(format!("{}: the loader panicked", case.name));
                continue;
            }
            Ok(Ok(_)) => {
                failures.push(format!("{}: was accepted", case.name));
                continue;
            }
            Ok(Err(error)) => error,
        };
        let text = error.to_string();
        assert_no_secret(&text, case.name);
        let named = error.problems.iter().find(|p| p.key.starts_with(case.key));
        match named {
            None => failures.push(format!("{}: no problem at `{}`:\n{text}", case.name, case.key)),
            Some(problem) => {
                let line = format!("{}: {}", problem.key, problem.message);
                let missing: Vec<_> = case.says.iter().filter(|s| !line.contains(**s)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{}: `{line}` does not say {missing:?}", case.name));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn malformed_environment_overrides_are_refused_naming_the_key() {
    let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let error = load_text(BASE, env(&[("REPORTING_ETL__DATABASE__POOL_SIZE", "lots")])).unwrap_err();
    assert!(error.problems[0].key.starts_with("database.pool_size"), "{error}");
    assert!(error.to_string().contains("lots"), "{error}");
    let error = load_text(
        BASE,
        env(&[("REPORTING_ETL__JOBS__FAX__TIME_ZONE", "Mars/Olympus")]),
    )
    .unwrap_err();
    assert_eq!(error.problems[0].key, "jobs.fax.time_zone", "{error}");
    assert!(error.to_string().contains("Mars/Olympus"), "{error}");
    let error = load_text(BASE, env(&[("REPORTING_ETL__SOURCES__RETARUS__SECRET", "x")])).unwrap_err();
    assert!(error.to_string().contains("secret"), "{error}");
}

#[test]
fn the_binary_exits_with_code_2_and_names_the_key_on_stderr() {
    let empty = secret_file("");
    for (text, key, value) in [
        (
            edit("Europe/Berlin", "Europe/Berln"),
            "jobs.fax.time_zone",
            "Europe/Berln",
        ),
        (
            edit("pool_size = 4", "pool_size = -1"),
            "database.pool_size",
            "-1",
        ),
        (
            edit(
                "https://graphql.au.roubler.com/graphql",
                "http://graphql.au.roubler.com/graphql",
            ),
            "sources.roubler.graphql_url",
            "http://graphql.au.roubler.com/graphql",
        ),
        (
            edit(
                "client_secret = \"retarus-secret-000123\"",
                &format!("client_secret_file = \"{}\"", empty.path().display()),
            ),
            "sources.retarus.client_secret",
            "empty",
        ),
        (
            edit(
                "[database]",
                "[database]\nurl = \"mysql://etl:pg-password-31337@db/etl\"",
            ),
            "database.url",
            "mysql",
        ),
        (
            edit("pool_size = 4", "pool_size = 4\npool_sise = 5"),
            "database.pool_sise",
            "unknown field",
        ),
    ] {
        let file = secret_file(&text);
        let output = support::binary()
            .args(["check", "--config"])
            .arg(file.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{key}: {stdout}{stderr}");
        assert!(stderr.contains(key) && stderr.contains(value), "{key}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_no_secret(&format!("{stdout}{stderr}"), key);
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream answers
// ---------------------------------------------------------------------------------------------

const CUSTOMER: &str = "99999";
const COMPANY: &str = "789";
/// Attempts per call in these tests: a transient-looking answer is sent this many times.
const ATTEMPTS: usize = 2;

struct Harness {
    sandbox: Sandbox,
    db: TestDb,
    settings: Arc<Settings>,
    exec: Executor,
    anchor: DateTime<Utc>,
    runs: AtomicI64,
    _config: tempfile::NamedTempFile,
}

fn upstream_config(sandbox: &Sandbox, db_url: &str) -> String {
    let fast = "rate_limit = { calls = 1000, per_ms = 1000 }";
    let (retarus, roubler, altrata, retently) = (
        &sandbox.retarus,
        &sandbox.roubler,
        &sandbox.altrata,
        &sandbox.retently,
    );
    format!(
        r#"
[database]
url = "{db_url}"
pool_size = 4

[sources.retarus]
kind = "retarus"
allow_http = true
token_url = "{}"
graphql_url = "{}"
client_id = "{}"
client_secret = "{}"
customer_ids = {:?}
{fast}

[sources.roubler]
kind = "roubler"
allow_http = true
authorize_url = "{}"
token_url = "{}"
graphql_url = "{}"
client_id = "{}"
client_secret = "{}"
{fast}

[sources.altrata]
kind = "altrata"
allow_http = true
token_url = "{}"
events_url = "{}"
profile_url = "{}"
username = "{}"
password = "{}"
api_key = "{}"
watch_ids = ["1-per-1", "1-org-1"]
{fast}

[sources.retently]
kind = "retently"
allow_http = true
base_url = "{}"
authorize_url = "{}"
token_url = "{}"
api_key = "{}"
{fast}

# A Retry-After beyond this fails the call at once and holds its source for this long only.
[rate_budget]
max_wait_secs = 1
"#,
        retarus.token_url,
        retarus.graphql_url,
        retarus.client_id,
        retarus.client_secret,
        retarus.customer_ids,
        roubler.auth_url,
        roubler.token_url,
        roubler.graphql_url,
        roubler.client_id,
        roubler.client_secret,
        altrata.token_url,
        altrata.events_url,
        altrata.profile_url,
        altrata.username,
        altrata.password,
        altrata.api_key,
        retently.base_url,
        retently.authorize_url,
        retently.token_url,
        retently.api_key,
    )
}

impl Harness {
    async fn start() -> Harness {
        let mut options = SandboxOptions::default();
        let anchor = Utc::now().duration_trunc(chrono::TimeDelta::hours(1)).unwrap();
        options.anchor = anchor;
        options.history_days = 20;
        options.altrata.rate_per_sec = 1000.0;
        options.altrata.burst = 1000;
        let sandbox = Sandbox::start(options).await.unwrap();
        let db = TestDb::new().await;
        let (settings, file) = support::load_config(&upstream_config(&sandbox, &db.url));
        // Roubler needs a human consent once; seed its refresh chain as `auth login` would.
        let grant = sandbox.roubler.grant_tokens();
        support::seed_refresh_chain(&db.pool, "roubler", &grant, grant.expires_in as f64).await;
        let settings = Arc::new(settings);
        let auth = reporting_etl::auth::build(&settings, db.pool.clone());
        let exec = Executor::with_options(
            settings.clone(),
            auth,
            ExecutorOptions {
                max_attempts: ATTEMPTS as u32,
                backoff_base: StdDuration::from_millis(2),
                backoff_max: StdDuration::from_millis(5),
                // Small enough that a test can send a "huge" page quickly.
                max_body_bytes: 2 * 1024 * 1024,
                ..ExecutorOptions::default()
            },
        )
        .unwrap();
        Harness {
            sandbox,
            db,
            settings,
            exec,
            anchor,
            runs: AtomicI64::new(1),
            _config: file,
        }
    }

    /// One load in one transaction, committed on success and rolled back on failure (as the
    /// runner does).
    async fn load(&self, target: &Target) -> anyhow::Result<LoadFigures> {
        let dataset = vendors::CATALOG.find(target.kind, target.dataset).unwrap();
        let source_name = target.kind.as_str();
        let call = CallContext::new(source_name, dataset.name);
        let request = LoadRequest {
            source_name,
            source: &self.settings.sources[source_name],
            dataset,
            scope: &target.scope,
            window: target.window,
            run_id: self.runs.fetch_add(1, Ordering::SeqCst),
            call: &call,
        };
        let tuning = Tuning::default()
            .with_flush_rows(2)
            .with_page_size(retarus::KIND, 7)
            .with_page_size(altrata::KIND, 3)
            .with_page_size(retently::KIND, 9);
        vendors::load_window(&self.exec, &self.db.pool, &request, &tuning).await
    }

    /// Every row of the target's table, bookkeeping columns included (a rollback keeps them).
    async fn rows(&self, target: &Target) -> Vec<Value> {
        let sql = format!(
            "SELECT to_jsonb(t) FROM {} t ORDER BY to_jsonb(t)::text",
            vendors::CATALOG.find(target.kind, target.dataset).unwrap().table
        );
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    fn faults(&self, kind: SourceKind) -> &Faults {
        let sandbox = &self.sandbox;
        [
            (retarus::KIND, &sandbox.retarus.faults),
            (roubler::KIND, &sandbox.roubler.faults),
            (altrata::KIND, &sandbox.altrata.faults),
            (retently::KIND, &sandbox.retently.faults),
        ]
        .into_iter()
        .find_map(|(served, faults)| (served == kind).then_some(faults))
        .expect("the sandbox stands in for every kind")
    }
}

/// What one load covers.
#[derive(Clone)]
struct Target {
    kind: SourceKind,
    dataset: &'static str,
    scope: ScopeTarget,
    window: Option<Window>,
}

/// How a malformed answer must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// Fails at once (no retry: the scripted answer is served once).
    Fatal,
    /// Retried until the budget is spent (the answer is served [`ATTEMPTS`] times), then fails.
    Retried,
    /// Served twice, as two consecutive pages: the second must stop the load.
    Repeated,
}

struct UpstreamCase {
    name: &'static str,
    target: usize,
    /// Real answers let through before the malformed one (pages already written in the load).
    pass: usize,
    answer: RawAnswer,
    ends: Ends,
    /// The error (with its context chain) must contain each of these.
    says: Vec<&'static str>,
}

fn json(body: &str) -> RawAnswer {
    RawAnswer::json(body.to_owned())
}

fn fax_page(records: &str, more: bool) -> String {
    format!(
        r#"{{"data":{{"faxOutUdrReport":{{"pageIndex":2,"hasMoreElements":{more},"content":[{records}]}}}}}}"#
    )
}

fn fax(id: &str, at: &str, extra: &str) -> String {
    format!(r#"{{"faxId":"{id}","keyTimestamp":"{at}"{extra}}}"#)
}

fn upstream_cases(anchor: DateTime<Utc>) -> Vec<UpstreamCase> {
    let at = (anchor - Duration::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let at = at.as_str();
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let huge = fax_page(
        &(0..20_000)
            .map(|i| {
                fax(
                    &format!("H{i}"),
                    at,
                    r#","statusName":"padding padding padding padding padding padding""#,
                )
            })
            .collect::<Vec<_>>()
            .join(","),
        false,
    );
    let mut gzip_garbage = RawAnswer::json(b"\x1f\x8b\x08\x00garbage, not deflate".to_vec());
    gzip_garbage = gzip_garbage.header("content-encoding", "gzip");
    let c = |name, target, pass, answer, ends, says: &[&'static str]| UpstreamCase {
        name,
        target,
        pass,
        answer,
        ends,
        says: says.to_vec(),
    };
    use Ends::{Fatal, Repeated, Retried};
    let (fax_t, sales, sheets, staff, events, profiles, customers, feedback, nps) =
        (0, 1, 2, 3, 4, 5, 6, 7, 8);
    vec![
        // Retarus (GraphQL, page/size paging): the fault lands on page 3 after two good pages.
        c(
            "a Boolean that is text",
            fax_t,
            2,
            json(&fax_page(&fax("X1", at, ""), false).replace("false", "\"no\"")),
            Fatal,
            &[
                "fetching page 3 of retarus.fax_out_udr",
                "does not match the query's types",
            ],
        ),
        c(
            "a null primary key",
            fax_t,
            2,
            json(&fax_page(&fax("X1", at, "").replace("\"X1\"", "null"), false)),
            Fatal,
            &["page 3", "does not match the query's types"],
        ),
        c(
            "a record without its key",
            fax_t,
            2,
            json(&fax_page(&format!(r#"{{"keyTimestamp":"{at}"}}"#), false)),
            Fatal,
            &["page 3", "faxId"],
        ),
        c(
            "a timestamp in another format",
            fax_t,
            2,
            json(&fax_page(&fax("X1", "28/07/2019 10:00", ""), false)),
            Fatal,
            &["page 3", "does not match the query's types"],
        ),
        c(
            "a date without a time",
            fax_t,
            2,
            json(&fax_page(&fax("X1", "2019-07-28", ""), false)),
            Fatal,
            &["page 3", "does not match the query's types"],
        ),
        c(
            "an integer beyond 64 bits",
            fax_t,
            2,
            json(&fax_page(
                &fax("X1", at, r#","attemptPages":99999999999999999999"#),
                false,
            )),
            Fatal,
            &["page 3", "does not match the query's types"],
        ),
        c(
            "an integer beyond the column's 32 bits",
            fax_t,
            2,
            json(&fax_page(&fax("X1", at, r#","attemptPages":3000000000"#), false)),
            Fatal,
            &["page 3", "out of range"],
        ),
        c(
            "a number beyond f64",
            fax_t,
            2,
            json(&fax_page(&fax("X1", at, r#","callDuration":1e400"#), false)),
            Retried,
            &["page 3", "gave up after 2 attempts", "not valid JSON"],
        ),
        c(
            "an HTML error page with 200",
            fax_t,
            2,
            RawAnswer::new(200, "<html><body><h1>502 Bad Gateway</h1></body></html>")
                .header("content-type", "text/html"),
            Retried,
            &["page 3", "gave up", "502 Bad Gateway"],
        ),
        c(
            "an HTML error page with 502",
            fax_t,
            2,
            RawAnswer::new(502, "<html><body>upstream down</body></html>"),
            Retried,
            &["page 3", "HTTP 502", "upstream down"],
        ),
        c(
            "a truncated body",
            fax_t,
            2,
            json(&fax_page(&fax("X1", at, ""), false)[..60]),
            Retried,
            &["page 3", "not valid JSON"],
        ),
        c(
            "an empty body",
            fax_t,
            2,
            json(""),
            Retried,
            &["page 3", "not valid JSON"],
        ),
        c(
            "a 204 without a body",
            fax_t,
            2,
            RawAnswer::new(204, ""),
            Retried,
            &["page 3", "not valid JSON"],
        ),
        c(
            "invalid UTF-8",
            fax_t,
            2,
            RawAnswer::json(
                fax_page(&fax("X1", at, ""), false)
                    .replace("X1", "X\u{1}")
                    .into_bytes()
                    .into_iter()
                    .map(|b| if b == 1 { 0xff } else { b })
                    .collect::<Vec<u8>>(),
            ),
            Retried,
            &["page 3", "not valid JSON"],
        ),
        c(
            "a byte-order mark",
            fax_t,
            2,
            RawAnswer::json(
                [
                    b"\xef\xbb\xbf".as_slice(),
                    fax_page(&fax("X1", at, ""), false).as_bytes(),
                ]
                .concat(),
            ),
            Retried,
            &["page 3", "not valid JSON"],
        ),
        c(
            "JSON that is not GraphQL",
            fax_t,
            2,
            json(r#"{"status":"ok","items":[1,2,3]}"#),
            Retried,
            &["page 3", "neither data nor errors"],
        ),
        c(
            "a JSON array",
            fax_t,
            2,
            json("[1,2,3]"),
            Fatal,
            &["page 3", "expected shape"],
        ),
        c(
            "duplicate keys",
            fax_t,
            2,
            json(r#"{"data":{"faxOutUdrReport":null},"data":{"faxOutUdrReport":null}}"#),
            Fatal,
            &["page 3", "duplicate field `data`"],
        ),
        c(
            "errors of the wrong type",
            fax_t,
            2,
            json(r#"{"data":null,"errors":"it broke"}"#),
            Fatal,
            &["page 3", "expected shape"],
        ),
        c(
            "a null report",
            fax_t,
            2,
            json(r#"{"data":{"faxOutUdrReport":null}}"#),
            Fatal,
            &["page 3", "came back null"],
        ),
        c(
            "nesting deeper than any parser should follow",
            fax_t,
            2,
            json(&nested),
            Retried,
            &["page 3", "recursion limit"],
        ),
        c(
            "gzip garbage",
            fax_t,
            2,
            gzip_garbage,
            Retried,
            &["page 3", "gave up", "decod"],
        ),
        c(
            "a page larger than the body limit",
            fax_t,
            2,
            json(&huge),
            Fatal,
            &["page 3", "larger than 2097152 bytes"],
        ),
        c(
            "a redirect",
            fax_t,
            2,
            RawAnswer::new(302, "").header("location", "https://evil.example.com/graphql"),
            Fatal,
            &["page 3", "HTTP 302", "redirects are not followed"],
        ),
        c(
            "a page that repeats the one before",
            fax_t,
            1,
            json(&fax_page(&fax("X1", at, ""), true)),
            Repeated,
            &["page 3", "an earlier page of this load already had"],
        ),
        // Roubler (GraphQL, one call per window).
        c(
            "a day in another format",
            sales,
            0,
            json(r#"{"data":{"locationSales":[{"day":"05/01/2024","actual":1.0}]}}"#),
            Fatal,
            &["roubler.location_sales", "does not match the query's types"],
        ),
        c(
            "a number that is text",
            sheets,
            0,
            json(&format!(
                r#"{{"data":{{"timesheets":[{{"id":"T1","startTime":"{at}","hours":"eight"}}]}}}}"#
            )),
            Fatal,
            &["roubler.timesheets", "does not match the query's types"],
        ),
        c(
            "an enum value of the wrong type",
            staff,
            0,
            json(r#"{"data":{"employees":[{"id":"E1","status":7}]}}"#),
            Fatal,
            &["roubler.employees", "does not match the query's types"],
        ),
        c(
            "a list that is an object",
            staff,
            0,
            json(r#"{"data":{"employees":{"id":"E1"}}}"#),
            Fatal,
            &["roubler.employees", "does not match the query's types"],
        ),
        c(
            "a rate-limit error on 200 with a Retry-After",
            sales,
            0,
            json(r#"{"errors":[{"name":"RateLimit","message":"Rate limit exceeded."}]}"#)
                .header("retry-after", "0"),
            Retried,
            &["roubler.location_sales", "gave up"],
        ),
        c(
            "a plain-text 500",
            sheets,
            0,
            RawAnswer::new(500, "oops").header("content-type", "text/plain"),
            Retried,
            &["roubler.timesheets", "HTTP 500: oops"],
        ),
        // Altrata (GraphQL, cursor paging).
        c(
            "an event without its id",
            events,
            1,
            json(r#"{"data":{"events":{"items":[{"eventId":null}],"pageInfoResponse":null}}}"#),
            Fatal,
            &["altrata.events", "does not match the query's types"],
        ),
        c(
            "a date in another format",
            events,
            0,
            json(r#"{"data":{"events":{"items":[{"eventId":"e1","eventDateInfo":{"date":"July 2019"}}]}}}"#),
            Fatal,
            &["altrata.events", "does not match the query's types"],
        ),
        c(
            "a profile timestamp that is a number",
            profiles,
            0,
            json(r#"{"data":{"personIdSearch":{"altrataId":"1-per-1","updatedAt":1564300000}}}"#),
            Fatal,
            &[
                "altrata person profile 1-per-1",
                "does not match the query's types",
            ],
        ),
        c(
            "an error that discards the payload",
            profiles,
            0,
            json(
                r#"{"data":{"personIdSearch":{"altrataId":"1-per-1"}},"errors":[{"errorType":"error","message":"Something went wrong"}]}"#,
            ),
            Fatal,
            &["1-per-1", "must be discarded"],
        ),
        c(
            "a 403 from the gateway",
            events,
            0,
            RawAnswer::new(403, r#"{"message":"Forbidden"}"#),
            Fatal,
            &["altrata.events", "HTTP 403: Forbidden"],
        ),
        // Retently (REST, page/limit paging).
        c(
            "a list that is text",
            customers,
            1,
            json(r#"{"data":{"subscribers":"none","page":2,"pages":9}}"#),
            Fatal,
            &["fetching page 2 of retently.customers", "data.subscribers"],
        ),
        c(
            "an id that is a number",
            customers,
            1,
            json(r#"{"data":{"subscribers":[{"id":5}],"page":2,"pages":9}}"#),
            Fatal,
            &["page 2", "data.subscribers"],
        ),
        c(
            "a page number that is text",
            feedback,
            1,
            json(r#"{"data":{"responses":[],"page":"two","pages":9}}"#),
            Fatal,
            &["page 2 of retently.feedback", "expected shape"],
        ),
        c(
            "an envelope without data",
            feedback,
            1,
            json(r#"{"message":"Internal error","code":500,"data":null}"#),
            Fatal,
            &["page 2 of retently.feedback", "no data"],
        ),
        c(
            "a score that is text",
            feedback,
            1,
            json(
                r#"{"data":{"responses":[{"id":"f1","createdDate":"2020-01-01T00:00:00Z","score":"ten"}],"page":2,"pages":9}}"#,
            ),
            Fatal,
            &["page 2", "data.responses"],
        ),
        c(
            "a 429 with a Retry-After",
            customers,
            1,
            RawAnswer::new(429, r#"{"message":"Too Many Requests"}"#).header("retry-after", "0"),
            Retried,
            &["page 2", "HTTP 429"],
        ),
        c(
            "a Retry-After beyond any duration",
            customers,
            1,
            RawAnswer::new(429, r#"{"message":"Too Many Requests"}"#)
                .header("retry-after", "1570000030700000300005"),
            Fatal,
            &["page 2", "Retry-After: 1570000030700000300005", "max_wait_secs"],
        ),
        c(
            "an NPS that is text",
            nps,
            0,
            json(r#"{"data":{"nps":"NaN"}}"#),
            Fatal,
            &["retently.nps_score", "expected shape"],
        ),
        c(
            "a list page repeating the one before",
            customers,
            0,
            RawAnswer::new(200, "SAME"),
            Repeated,
            &[
                "page 2 of retently.customers",
                "an earlier page of this load already had",
            ],
        ),
    ]
}

/// Whether the error chain says everything the case demands.
fn check_error(case: &UpstreamCase, text: &str) -> Result<(), String> {
    let missing: Vec<_> = case.says.iter().filter(|s| !text.contains(**s)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("error does not say {missing:?}: {text}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_upstream_answer_fails_its_load_clearly_and_keeps_the_previous_rows() {
    let h = Arc::new(Harness::start().await);
    let today = h.anchor.date_naive();
    let call = CallContext::new("roubler", "location_sales");
    let location = vendors::discover_scopes(
        &h.exec,
        &call,
        "roubler",
        &h.settings.sources["roubler"],
        roubler::datasets::LOCATION_SALES.info(),
        &Scope::All,
    )
    .await
    .unwrap()
    .remove(0);
    let recent = Window::new(h.anchor - Duration::days(6), h.anchor - Duration::days(1));
    let days = Window::new(
        utc_midnight(today - Duration::days(6)),
        utc_midnight(today - Duration::days(1)),
    );
    let watch = ScopeTarget::WatchList(vec!["1-per-1".into(), "1-org-1".into()]);
    let targets = vec![
        Target {
            kind: retarus::KIND,
            dataset: "fax_out_udr",
            scope: ScopeTarget::Customer(CUSTOMER.into()),
            window: Some(recent),
        },
        Target {
            kind: roubler::KIND,
            dataset: "location_sales",
            scope: location.clone(),
            window: Some(days),
        },
        Target {
            kind: roubler::KIND,
            dataset: "timesheets",
            scope: location,
            window: Some(recent),
        },
        Target {
            kind: roubler::KIND,
            dataset: "employees",
            scope: ScopeTarget::Company(COMPANY.into()),
            window: None,
        },
        Target {
            kind: altrata::KIND,
            dataset: "events",
            scope: watch.clone(),
            window: None,
        },
        Target {
            kind: altrata::KIND,
            dataset: "profiles",
            scope: watch,
            window: None,
        },
        Target {
            kind: retently::KIND,
            dataset: "customers",
            scope: ScopeTarget::Account,
            window: Some(Window::new(
                h.anchor - Duration::days(15),
                h.anchor - Duration::days(1),
            )),
        },
        Target {
            kind: retently::KIND,
            dataset: "feedback",
            scope: ScopeTarget::Account,
            window: Some(Window::new(
                h.anchor - Duration::days(15),
                h.anchor - Duration::days(1),
            )),
        },
        Target {
            kind: retently::KIND,
            dataset: "nps_score",
            scope: ScopeTarget::Account,
            window: None,
        },
    ];
    // The previous rows every failed load must leave behind.
    let mut before = Vec::new();
    for target in &targets {
        h.load(target)
            .await
            .unwrap_or_else(|e| panic!("baseline {}: {e:#}", target.dataset));
        let rows = h.rows(target).await;
        assert!(!rows.is_empty(), "baseline {} loaded nothing", target.dataset);
        before.push(rows);
    }

    let mut cases = upstream_cases(h.anchor);
    // The repeated Retently page is the first real page, so it needs the real bytes.
    let customers_page: String = {
        let window = targets[6].window.unwrap();
        reqwest::Client::new()
            .get(format!("{}/api/v2/customers", h.sandbox.retently.base_url))
            .header("Authorization", format!("api_key={}", h.sandbox.retently.api_key))
            .query(&[
                ("page", "1".to_owned()),
                ("limit", "9".to_owned()),
                ("sort", "createdDate".to_owned()),
                (
                    "startDate",
                    window.start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
                (
                    "endDate",
                    (window.end - Duration::milliseconds(1))
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
            ])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    for case in cases.iter_mut().filter(|c| c.answer.body.as_ref() == b"SAME") {
        case.answer = RawAnswer::json(customers_page.clone());
    }
    assert!(cases.len() >= 30, "{} cases", cases.len());

    let mut failures = Vec::new();
    for (index, case) in cases.into_iter().enumerate() {
        let target = targets[case.target].clone();
        let faults = h.faults(target.kind).clone();
        // One spare copy: a load that retries a "fatal" answer shows up as a missing spare.
        let (copies, spare) = match case.ends {
            Ends::Fatal => (1, 1),
            Ends::Retried => (ATTEMPTS, 1),
            Ends::Repeated => (2, 0),
        };
        faults.script_after(case.pass, vec![case.answer.clone(); copies + spare]);
        let harness = h.clone();
        let load_target = target.clone();
        let outcome = tokio::spawn(async move { harness.load(&load_target).await }).await;
        let left = faults.scripted_remaining();
        faults.clear();
        let verdict = match outcome {
            Err(join) if join.is_panic() => Err("the load panicked".to_owned()),
            Err(join) => Err(format!("the load task failed: {join}")),
            Ok(Ok(figures)) => Err(format!("the load succeeded: {figures:?}")),
            Ok(Err(error)) => {
                let text = format!("{error:#}");
                check_error(&case, &text).and_then(|()| {
                    if left == spare {
                        Ok(())
                    } else {
                        Err(format!(
                            "expected the answer to be served {copies} time(s), {} scripted answers are left: {text}",
                            left
                        ))
                    }
                })
            }
        };
        if let Err(why) = verdict {
            failures.push(format!("#{index} {}: {why}", case.name));
        }
        if h.rows(&target).await != before[case.target] {
            failures.push(format!("#{index} {}: the previous rows changed", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altrata_cursor_cycle_or_a_missing_cursor_fails_the_load_and_keeps_the_previous_rows() {
    let h = Harness::start().await;
    let target = Target {
        kind: altrata::KIND,
        dataset: "events",
        scope: ScopeTarget::WatchList(vec!["1-per-1".into()]),
        window: None,
    };
    h.load(&target).await.expect("baseline load");
    let before = h.rows(&target).await;
    assert!(!before.is_empty(), "the baseline loaded events");
    let page = |id: &str, cursor: Option<&str>| {
        let cursor = cursor.map_or("null".to_owned(), |c| format!("\"{c}\""));
        json(&format!(
            r#"{{"data":{{"events":{{"items":[{{"eventId":"{id}"}}],"pageInfoResponse":{{"pageInfo":{{"hasNextPage":true,"endCursor":{cursor}}}}}}}}}}}"#
        ))
    };
    // A → B → A: the third page points back to a cursor already followed.
    let cycle: Vec<RawAnswer> = (0..10)
        .map(|i| page(&format!("e{i}"), Some(if i % 2 == 0 { "cA" } else { "cB" })))
        .collect();
    // "More follow", but no cursor to them.
    let dangling = vec![page("e0", Some("cA")), page("e1", None)];
    for (name, script, served, says) in [
        ("cycle", cycle, 3, "already followed"),
        ("dangling", dangling, 2, "gives no cursor"),
    ] {
        h.sandbox.altrata.faults.script(script.clone());
        let error = h.load(&target).await.expect_err(name);
        let left = h.sandbox.altrata.faults.scripted_remaining();
        h.sandbox.altrata.faults.clear();
        let text = format!("{error:#}");
        assert!(
            text.contains(says) && text.contains("nothing of it is kept"),
            "{name}: {text}"
        );
        assert_eq!(
            script.len() - left,
            served,
            "{name}: pages served before the load stopped"
        );
        assert_eq!(
            h.rows(&target).await,
            before,
            "{name}: the previous rows are untouched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_cannot_be_placed_are_skipped_with_a_warning_not_stored() {
    let h = Harness::start().await;
    let window = Window::new(h.anchor - Duration::days(15), h.anchor - Duration::days(1));
    let target = Target {
        kind: retently::KIND,
        dataset: "customers",
        scope: ScopeTarget::Account,
        window: Some(window),
    };
    h.sandbox.retently.faults.script(vec![json(
        r#"{"data":{"subscribers":[{"id":"c1","createdDate":"28.07.2019"},{"id":null,"createdDate":"2020-01-01T00:00:00Z"}],"page":1,"pages":1}}"#,
    )]);
    let figures = h.load(&target).await.unwrap();
    assert_eq!(figures.rows, 0);
    let text = figures.warnings.join("; ");
    assert!(
        text.contains("without a readable createdDate") && text.contains("without an id"),
        "{text}"
    );
    // Altrata events with an empty id are skipped the same way.
    let events = Target {
        kind: altrata::KIND,
        dataset: "events",
        scope: ScopeTarget::WatchList(vec!["1-per-1".into()]),
        window: None,
    };
    h.sandbox.altrata.faults.script(vec![json(
        r#"{"data":{"events":{"items":[{"eventId":"  "},{"eventId":"ok-1"}]}}}"#,
    )]);
    let figures = h.load(&events).await.unwrap();
    assert_eq!(figures.rows, 1);
    assert!(
        figures.warnings.iter().any(|w| w.contains("without an eventId")),
        "{:?}",
        figures.warnings
    );
}

/// Pages that cycle (A, B, A, B… or A, B, C, A…), each saying more follow, once let a load
/// "succeed" with only the records of one cycle in place of the whole window. Every period is
/// refused at the first page that repeats an earlier one, and the window keeps its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cycling_with_period_two_or_three_fail_the_window_and_keep_its_rows() {
    let h = Harness::start().await;
    let target = Target {
        kind: retarus::KIND,
        dataset: "fax_out_udr",
        scope: ScopeTarget::Customer(CUSTOMER.into()),
        window: Some(Window::new(
            h.anchor - Duration::days(6),
            h.anchor - Duration::days(1),
        )),
    };
    h.load(&target).await.expect("baseline load");
    let before = h.rows(&target).await;
    assert!(
        before.len() > 10,
        "the baseline window holds rows: {}",
        before.len()
    );
    let at = (h.anchor - Duration::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for period in [2usize, 3] {
        let pages: Vec<String> = (0..period)
            .map(|p| {
                let records: Vec<String> = (0..5).map(|r| fax(&format!("C{p}-{r}"), &at, "")).collect();
                fax_page(&records.join(","), true)
            })
            .collect();
        // 40 pages of the cycle, as the defect report scripted them.
        let script: Vec<RawAnswer> = (0..40).map(|n| json(&pages[n % period])).collect();
        h.sandbox.retarus.faults.script(script);
        let error = h.load(&target).await.expect_err("a cycling load fails");
        let left = h.sandbox.retarus.faults.scripted_remaining();
        h.sandbox.retarus.faults.clear();
        let text = format!("{error:#}");
        assert!(
            text.contains("an earlier page of this load already had")
                && text.contains("nothing of it is kept"),
            "period {period}: {text}"
        );
        assert_eq!(
            40 - left,
            period + 1,
            "period {period}: refused at the first repeated page"
        );
        assert_eq!(
            h.rows(&target).await,
            before,
            "period {period}: the window keeps its rows"
        );
    }
}
