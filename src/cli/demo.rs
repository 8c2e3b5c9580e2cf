//! `reporting-etl demo`: the whole service in one command, against the sandbox upstreams
//! started in-process (behind the default `sandbox` feature; production builds leave it out).
//!
//! It uses the configured database or the embedded default, authorises every source against the
//! sandbox (Roubler's authorization code without a browser: it follows the authorize redirect
//! itself), loads the last week of every dataset, and prints the runs, row counts per table and
//! example queries. Running it again re-extracts the same windows and shows the same counts.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use chrono::{Duration, Utc};
use tokio_util::sync::CancellationToken;

use super::run::summary;
use crate::app::Engine;
use crate::auth;
use crate::config::{ConfigSource, Settings};
use crate::jobs::runner;
use crate::store::runs::{RunStatus, Trigger};
use crate::vendors::CATALOG;

/// A configuration text with one source of each vendor pointing at `sandbox` (plain http
/// allowed), plus `extra` (jobs, database, overrides). Shared with the integration tests.
pub fn sandbox_config(sandbox: &sandbox::Sandbox, extra: &str) -> String {
    let (retarus, roubler, altrata, retently) = (
        &sandbox.retarus,
        &sandbox.roubler,
        &sandbox.altrata,
        &sandbox.retently,
    );
    let watch: Vec<String> = altrata
        .person_ids()
        .into_iter()
        .take(3)
        .chain(altrata.organization_ids().into_iter().take(2))
        .collect();
    format!(
        r#"
[sources.retarus]
kind = "retarus"
allow_http = true
token_url = "{}"
graphql_url = "{}"
client_id = "{}"
client_secret = "{}"
customer_ids = {:?}

[sources.roubler]
kind = "roubler"
allow_http = true
authorize_url = "{}"
token_url = "{}"
graphql_url = "{}"
client_id = "{}"
client_secret = "{}"
redirect_uri = "{}"

[sources.altrata]
kind = "altrata"
allow_http = true
token_url = "{}"
events_url = "{}"
profile_url = "{}"
username = "{}"
password = "{}"
api_key = "{}"
watch_ids = {:?}
rate_limit = {{ calls = 2, per_ms = 1000 }}

[sources.retently]
kind = "retently"
allow_http = true
base_url = "{}"
authorize_url = "{}"
token_url = "{}"
api_key = "{}"
{extra}
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
        roubler.redirect_uri,
        altrata.token_url,
        altrata.events_url,
        altrata.profile_url,
        altrata.username,
        altrata.password,
        altrata.api_key,
        watch,
        retently.base_url,
        retently.authorize_url,
        retently.token_url,
        retently.api_key,
    )
}

/// One job per dataset of every vendor `sources` (a [`sandbox_config`]) has a source for, every
/// hour (the demo runs them once itself). A vendor the sandbox does not stand in for yet has no
/// source there, so it has no job either, and the demo still loads.
pub(crate) fn demo_jobs(sources: &str) -> String {
    let mut jobs = String::new();
    for dataset in CATALOG {
        let kind = dataset.kind.as_str();
        if !sources.contains(&format!("\n[sources.{kind}]\n")) {
            continue;
        }
        jobs.push_str(&format!(
            "\n[jobs.{kind}_{name}]\nsource = \"{kind}\"\ndataset = \"{name}\"\nschedule = \"0 0 * * * *\"\n",
            name = dataset.name
        ));
    }
    jobs
}

/// Runs the demo. `base` holds the user's settings (for the database); sources and jobs are the sandbox's.
pub(crate) async fn run(base: Settings) -> Result<std::process::ExitCode> {
    let sandbox = sandbox::Sandbox::start(sandbox::SandboxOptions::default())
        .await
        .context("starting the sandbox upstreams")?;
    let settings = demo_settings(&sandbox, &base)?;
    let settings = Arc::new(settings);
    let engine = Engine::start(settings.clone(), "demo").await?;
    authorise_roubler(&settings, &engine).await?;

    let today = Utc::now().date_naive();
    let range = (today - Duration::days(7), today);
    println!(
        "Loading {} → {} of every dataset from the sandbox upstreams…\n",
        range.0, range.1
    );
    let jobs: Vec<String> = settings.jobs.keys().cloned().collect();
    let reports = runner::run_once(
        engine.runner.clone(),
        jobs,
        Trigger::Demo,
        Some(range),
        CancellationToken::new(),
    )
    .await;
    print!("{}", summary(&reports));

    println!("\nRows per table:");
    let mut table = super::table::Table::new(["TABLE", "ROWS"]);
    for dataset in CATALOG {
        let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            dataset.table
        )))
        .fetch_one(engine.store.pool())
        .await
        .with_context(|| format!("counting {}", dataset.table))?;
        table.row([dataset.table.to_owned(), count.to_string()]);
    }
    print!("{}", table.render());
    println!("{EXAMPLES}");
    let failed = reports.iter().any(|r| r.status == RunStatus::Failed);
    let mut store = engine.store;
    match store.embedded() {
        Some(server) => {
            println!("Data directory:  {}", server.data_dir().display());
            if let Some(note) = server.relocation_note() {
                println!("  ({note})");
            }
            println!("Connect with:  {}", server.psql_hint());
            println!(
                "The embedded server keeps running for that; stop it with:  {}",
                server.stop_hint()
            );
            store.keep_embedded_running();
        }
        None => println!("Connect with psql to the configured database.url."),
    }
    store.close().await?;
    Ok(if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}
const EXAMPLES: &str = r#"
Try these (schema per vendor, etl for run records):
  -- How fresh is every dataset?
  SELECT source, dataset, scope, last_success_at, age, last_status FROM etl.freshness ORDER BY 1, 2, 3;
  -- Outbound faxes per day and status
  SELECT date_trunc('day', key_timestamp) AS day, status_name, count(*) FROM retarus.fax_out_udr GROUP BY 1, 2 ORDER BY 1, 2;
  -- Sales per location and local day
  SELECT location_id, day, actual, forecast FROM roubler.location_sales ORDER BY location_id, day;
"#;

fn demo_settings(sandbox: &sandbox::Sandbox, base: &Settings) -> Result<Settings> {
    let text = sandbox_config(sandbox, &demo_jobs(&sandbox_config(sandbox, "")));
    let dir = std::env::temp_dir().join(format!("reporting-etl-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("demo.toml");
    std::fs::write(&path, text)?;
    let mut settings = crate::app::load_settings(&ConfigSource {
        path: Some(path.clone()),
        env: Some(Default::default()),
    })
    .map_err(|e| anyhow!("the demo configuration is invalid: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    settings.database = base.database.clone();
    settings.log = base.log.clone();
    settings.security = base.security.clone();
    Ok(settings)
}

/// Roubler's authorization code without a browser: follow the authorize URL's redirect ourselves.
async fn authorise_roubler(settings: &Settings, engine: &Engine) -> Result<()> {
    let attempt = auth::login::Attempt::begin(settings, "roubler")?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the demo's browser")?;
    let response = client
        .get(attempt.authorize_url().clone())
        .send()
        .await
        .context("opening the sandbox authorize page")?;
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("the sandbox did not redirect to the redirect URI"))?;
    let redirected = url::Url::parse(location).context("reading the sandbox redirect")?;
    attempt
        .finish(settings, engine.store.pool().clone(), &redirected)
        .await
        .context("authorising roubler against the sandbox")
}
