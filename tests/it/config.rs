//! Configuration loading as a user meets it: files, environment overrides, and errors that name
//! the key and the bad value; and a `token_key` that does not open the stored tokens.

use crate::support;

use std::collections::HashMap;
use std::io::Write;

use reporting_etl::config::{ConfigError, ConfigSource, Settings};
use reporting_etl::vendors::retarus::RetarusSettings;
use secrecy::ExposeSecret;

const VALID: &str = r#"
[database]
pool_size = 4

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

[jobs.fax]
source = "retarus"
dataset = "fax_out_udr"
schedule = "0 */15 * * * *"
time_zone = "Europe/Berlin"
"#;

fn write(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

fn load_with(contents: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let file = write(contents);
    reporting_etl::app::load_settings(&ConfigSource {
        path: Some(file.path().to_path_buf()),
        env: Some(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        ),
    })
}

fn load(contents: &str) -> Result<Settings, ConfigError> {
    load_with(contents, &[])
}

/// The single problem reported, as "key: message".
fn only_problem(result: Result<Settings, ConfigError>) -> (String, String) {
    let error = result.expect_err("the configuration must be refused");
    assert_eq!(error.problems.len(), 1, "{error}");
    let problem = &error.problems[0];
    (problem.key.clone(), problem.message.clone())
}

#[test]
fn a_valid_file_loads_with_typed_values() {
    let settings = load(VALID).unwrap();
    assert_eq!(settings.database.pool_size, 4);
    let (job, source) = settings.job("fax").unwrap();
    assert_eq!(job.time_zone.to_string(), "Europe/Berlin");
    assert!(
        source
            .section::<RetarusSettings>()
            .is_some_and(|s| s.customer_ids == ["99999"])
    );
}

#[test]
fn an_unknown_key_is_refused_naming_it() {
    let (key, message) = only_problem(load(
        &VALID.replace("pool_size = 4", "pool_size = 4\npool_sise = 5"),
    ));
    assert_eq!(key, "database.pool_sise");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn an_unknown_key_inside_a_source_is_refused_naming_it() {
    let (key, message) = only_problem(load(&VALID.replace(
        "client_id = \"client-1\"",
        "client_id = \"client-1\"\nclient_idd = \"x\"",
    )));
    assert_eq!(key, "sources.retarus.client_idd");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn a_missing_required_field_is_refused_naming_it() {
    let (key, message) = only_problem(load(&VALID.replace("client_id = \"client-1\"\n", "")));
    assert!(key.starts_with("sources.retarus"), "{key}");
    assert!(message.contains("client_id"), "{message}");
}

#[test]
fn a_missing_secret_is_refused_naming_its_key() {
    let (key, message) = only_problem(load(
        &VALID.replace("client_secret = \"retarus-secret-000123\"\n", ""),
    ));
    assert_eq!(key, "sources.retarus.client_secret");
    assert!(message.contains("missing"), "{message}");
}

#[test]
fn a_bad_url_is_refused_naming_key_and_value() {
    let (key, message) = only_problem(load(&VALID.replace(
        "https://graphql.au.roubler.com/graphql",
        "graphql.au.roubler.com/graphql",
    )));
    assert_eq!(key, "sources.roubler.graphql_url");
    assert!(message.contains("`graphql.au.roubler.com/graphql`"), "{message}");
}

#[test]
fn a_plain_http_url_is_refused_unless_allowed() {
    let insecure = VALID.replace(
        "https://graphql.au.roubler.com/graphql",
        "http://graphql.au.roubler.com/graphql",
    );
    let (key, message) = only_problem(load(&insecure));
    assert_eq!(key, "sources.roubler.graphql_url");
    assert!(
        message.contains("http://graphql.au.roubler.com/graphql") && message.contains("https"),
        "{message}"
    );
    let allowed = insecure.replace("kind = \"roubler\"", "kind = \"roubler\"\nallow_http = true");
    assert!(load(&allowed).is_ok());
}

#[test]
fn a_bad_cron_expression_is_refused_naming_key_and_value() {
    let (key, message) = only_problem(load(&VALID.replace("0 */15 * * * *", "*/15 * * * *")));
    assert_eq!(key, "jobs.fax.schedule");
    assert!(message.contains("`*/15 * * * *`"), "{message}");
    let (key, message) = only_problem(load(&VALID.replace("0 */15 * * * *", "0 */15 25 * * *")));
    assert_eq!(key, "jobs.fax.schedule");
    assert!(message.contains("`0 */15 25 * * *`"), "{message}");
}

#[test]
fn an_unknown_time_zone_is_refused_naming_key_and_value() {
    let (key, message) = only_problem(load(&VALID.replace("Europe/Berlin", "Europe/Berln")));
    assert_eq!(key, "jobs.fax.time_zone");
    assert!(message.contains("`Europe/Berln`"), "{message}");
}

#[test]
fn a_job_pointing_at_a_missing_source_is_refused_naming_key_and_value() {
    let (key, message) = only_problem(load(
        &VALID.replace("source = \"retarus\"", "source = \"retarsu\""),
    ));
    assert_eq!(key, "jobs.fax.source");
    assert!(
        message.contains("`retarsu`") && message.contains("retarus"),
        "{message}"
    );
}

#[test]
fn a_dataset_of_another_vendor_is_refused_naming_key_and_value() {
    let (key, message) = only_problem(load(&VALID.replace("fax_out_udr", "location_sales")));
    assert_eq!(key, "jobs.fax.dataset");
    assert!(
        message.contains("`location_sales`") && message.contains("fax_out_udr"),
        "{message}"
    );
}

#[test]
fn an_unknown_source_kind_is_refused_naming_key_and_value() {
    let (key, message) = only_problem(load(&VALID.replace("kind = \"roubler\"", "kind = \"rubler\"")));
    assert!(key.starts_with("sources.roubler"), "{key}");
    assert!(message.contains("rubler"), "{message}");
}

#[test]
fn a_wrong_type_is_refused_naming_key_and_value() {
    let (key, message) = only_problem(load(&VALID.replace("pool_size = 4", "pool_size = \"many\"")));
    assert_eq!(key, "database.pool_size");
    assert!(message.contains("many"), "{message}");
}

#[test]
fn several_problems_are_reported_together() {
    let broken = VALID
        .replace("Europe/Berlin", "Mars/Olympus")
        .replace("0 */15 * * * *", "bad");
    let error = load(&broken).unwrap_err();
    // Deserialisation stops at the first bad value of a job; both are in the same job, so one
    // (which one depends on the order the config crate visits the job's keys).
    assert_eq!(error.problems.len(), 1, "{error}");
    let problem = &error.problems[0];
    match problem.key.as_str() {
        "jobs.fax.time_zone" => assert_eq!(
            problem.message,
            "`Mars/Olympus` is not an IANA time zone name (e.g. \"Europe/Berlin\", \"UTC\")"
        ),
        "jobs.fax.schedule" => assert_eq!(
            problem.message,
            "`bad` has 1 fields; a schedule needs 6 (seconds first), e.g. \"0 30 2 * * *\""
        ),
        other => panic!("unexpected key `{other}`: {error}"),
    }
    let broken = VALID
        .replace("customer_ids = [\"99999\"]", "customer_ids = []")
        .replace("source = \"retarus\"", "source = \"nope\"");
    let error = load(&broken).unwrap_err();
    let keys: Vec<&str> = error.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["sources.retarus.customer_ids", "jobs.fax.source"],
        "{error}"
    );
}

#[test]
fn an_environment_variable_overrides_a_nested_key() {
    let settings = load_with(
        VALID,
        &[
            ("REPORTING_ETL__DATABASE__POOL_SIZE", "17"),
            (
                "REPORTING_ETL__SOURCES__RETARUS__CLIENT_SECRET",
                "from-env-000123",
            ),
            ("REPORTING_ETL__SOURCES__RETARUS__CUSTOMER_IDS", "11111,22222"),
            ("REPORTING_ETL__JOBS__FAX__TIME_ZONE", "Australia/Sydney"),
        ],
    )
    .unwrap();
    assert_eq!(settings.database.pool_size, 17);
    let (job, source) = settings.job("fax").unwrap();
    assert_eq!(job.time_zone.to_string(), "Australia/Sydney");
    let Some(retarus) = source.section::<RetarusSettings>() else {
        panic!("retarus")
    };
    // The secret keeps its leading zeros: environment values are never re-parsed as numbers.
    assert_eq!(
        retarus.client_secret.as_ref().unwrap().expose_secret(),
        "from-env-000123"
    );
    assert_eq!(retarus.customer_ids, ["11111", "22222"]);
}

#[test]
fn the_environment_alone_can_configure_a_source() {
    let settings = load_with(
        "",
        &[
            ("REPORTING_ETL__SOURCES__R__KIND", "retarus"),
            ("REPORTING_ETL__SOURCES__R__CLIENT_ID", "c"),
            ("REPORTING_ETL__SOURCES__R__CLIENT_SECRET", "000123"),
            ("REPORTING_ETL__SOURCES__R__CUSTOMER_IDS", "99999"),
        ],
    )
    .unwrap();
    let Some(retarus) = settings.sources["r"].section::<RetarusSettings>() else {
        panic!("retarus")
    };
    assert_eq!(retarus.client_secret.as_ref().unwrap().expose_secret(), "000123");
}

#[test]
fn a_secret_can_come_from_a_file() {
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret, "file-secret-42").unwrap();
    let contents = VALID.replace(
        "client_secret = \"retarus-secret-000123\"",
        &format!("client_secret_file = \"{}\"", secret.path().display()),
    );
    let settings = load(&contents).unwrap();
    let Some(retarus) = settings.sources["retarus"].section::<RetarusSettings>() else {
        panic!("retarus")
    };
    assert_eq!(
        retarus.client_secret.as_ref().unwrap().expose_secret(),
        "file-secret-42"
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let settings = load(VALID).unwrap();
    let debug = format!("{settings:?}");
    assert!(!debug.contains("retarus-secret-000123"), "{debug}");
    assert!(!debug.contains("roubler-secret-xyz"), "{debug}");
}

#[test]
fn check_prints_sources_and_jobs_but_never_secrets() {
    let file = write(VALID);
    let output = support::binary()
        .arg("check")
        .arg("--config")
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("retarus") && stdout.contains("fax_out_udr") && stdout.contains("Europe/Berlin"),
        "{stdout}"
    );
    for secret in ["retarus-secret-000123", "roubler-secret-xyz"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "secret leaked:\n{stdout}{stderr}"
        );
    }
}

#[test]
fn a_bad_config_stops_the_process_before_it_does_anything() {
    let file = write(&VALID.replace("Europe/Berlin", "Europe/Berln"));
    let output = support::binary()
        .arg("migrate")
        .arg("--config")
        .arg(file.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("jobs.fax.time_zone") && stderr.contains("`Europe/Berln`"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_named_on_the_command_line_is_an_error() {
    let output = support::binary()
        .args(["check", "--config", "/nonexistent/etl.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/etl.toml"), "{stderr}");
}

/// Two valid token keys (32 bytes each, base64).
const KEY_ONE: &str = "Y29uZmlnLXRlc3Qta2V5LW51bWJlci1vbmUtMzJieXQ=";
const KEY_TWO: &str = "Y29uZmlnLXRlc3Qta2V5LW51bWJlci10d28tMzJieXQ=";

#[test]
fn a_token_key_is_32_bytes_in_hex_or_base64() {
    let with_key = |key: &str| {
        VALID.replace(
            "[database]",
            &format!("[security]\ntoken_key = \"{key}\"\n\n[database]"),
        )
    };
    assert!(load(&with_key(KEY_ONE)).is_ok());
    assert!(load(&with_key(&"ab".repeat(32))).is_ok());
    let (problem_key, message) = only_problem(load(&with_key("")));
    assert_eq!(
        (problem_key.as_str(), message.as_str()),
        (
            "security.token_key",
            "is empty; give the value, or `<key>_file` naming a file holding it"
        )
    );
    for (key, says) in [
        ("short", "is neither hex nor base64"),
        ("MDEyMzQ1Njc4OWFiY2RlZg==", "decodes to 16 bytes, not 32"),
        (&"ab".repeat(33), "decodes to 33 bytes, not 32"),
    ] {
        let (problem_key, message) = only_problem(load(&with_key(key)));
        assert_eq!(problem_key, "security.token_key");
        assert!(
            message.starts_with(says) && message.contains("openssl rand -base64 32"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_key_is_a_clear_error_and_auth_status_fails() {
    use reporting_etl::auth::store::{NewTokens, TokenStore};
    use reporting_etl::auth::{AccessToken, RefreshToken};

    let db = support::TestDb::new().await;
    // A refresh chain stored encrypted under the first key, as `auth login` would.
    let store = TokenStore::new(db.pool.clone(), Some(&KEY_ONE.to_owned().into()));
    let (lock, _) = store.lock("roubler", "authorization_code").await.unwrap();
    lock.save(
        NewTokens {
            access_token: &AccessToken::new("access-token-1"),
            access_expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
            refresh_token: Some(&RefreshToken::new("refresh-token-secret-1")),
        },
        true,
    )
    .await
    .unwrap();
    let config = |key: &str| {
        write(&VALID.replace(
            "[database]\npool_size = 4",
            &format!(
                "[database]\nurl = \"{}\"\npool_size = 4\n\n[security]\ntoken_key = \"{key}\"",
                db.url
            ),
        ))
    };
    // The exit code and everything printed, of the binary run with `args` on `file`.
    let cli = |args: &[&str], file: &tempfile::NamedTempFile| {
        let output = support::binary()
            .args(args)
            .arg("--config")
            .arg(file.path())
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), all)
    };

    let (code, all) = cli(&["auth", "status"], &config(KEY_ONE));
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("roubler") && all.contains("ok"), "{all}");

    let wrong = config(KEY_TWO);
    let (code, all) = cli(&["auth", "status"], &wrong);
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("does not decrypt with security.token_key (wrong key?)")
            && all.contains("not usable now: roubler"),
        "{all}"
    );
    let (code, refresh_all) = cli(&["auth", "refresh", "roubler"], &wrong);
    assert_eq!(code, Some(1), "{refresh_all}");
    assert!(
        refresh_all.contains("does not decrypt with security.token_key"),
        "{refresh_all}"
    );
    for secret in [
        "refresh-token-secret-1",
        "access-token-1",
        KEY_ONE,
        KEY_TWO,
        "roubler-secret-xyz",
    ] {
        assert!(
            !all.contains(secret) && !refresh_all.contains(secret),
            "`{secret}` printed"
        );
    }
}
