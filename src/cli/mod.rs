//! The command line: argument definitions (clap) and one function per command.
//!
//! Commands print their results on stdout and log on stderr. Exit codes: 0 success, 1 a command
//! failed (e.g. a window failed), 2 the configuration or the arguments are invalid.

pub(crate) mod dbt;
#[cfg(feature = "sandbox")]
pub mod demo;
pub(crate) mod drift;
mod report;
pub(crate) mod run;
pub mod schema;
pub(crate) mod table;
pub(crate) mod upstream_check;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};

use crate::auth;
use crate::config::{ConfigSource, LogFormat, Settings};
use crate::executor::shared_budget;
use crate::store::{self, Database, runs};
use report::{
    archive_table, auth_status_table, budget_table, check_summary, jobs_table, limits_table, runs_table,
};

/// Extracts reporting data from vendor APIs (Retarus, Roubler, Altrata, Retently) on cron
/// schedules and loads it into PostgreSQL, with a record of every run.
#[derive(Debug, Parser)]
#[command(name = "reporting-etl", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Configuration file (TOML). Default: $REPORTING_ETL_CONFIG, else ./reporting-etl.toml if present.
    /// Every key can be overridden by REPORTING_ETL__SECTION__KEY environment variables.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format on stderr (default: log.format from the config, else human).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the service: schedule every configured job (or, with --once, run jobs once and exit).
    Run(RunArgs),
    /// Load and validate the configuration, then print its sources and jobs (never secrets).
    /// With --upstream, also check every compiled query against each GraphQL source's live schema.
    Check(CheckArgs),
    /// Apply database migrations (also done automatically at start-up) and exit.
    Migrate,
    /// Show recent runs as a table, newest first, then the shared rate budget per source and
    /// process (calls made, time waited for budget).
    Runs {
        /// Only runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// How many runs to show (1 to 10000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Show the configured jobs with their next fire time (local and UTC) and last outcome.
    Jobs,
    /// Re-derive a job's tables from the archived answers of its loads, with no upstream call:
    /// each window its loads committed (the latest load of each), through the same decoding,
    /// mapping, swap and run records as a load (trigger `rebuild`). Stops on Ctrl-C like
    /// `run --once`; exits 1 if any window failed (e.g. one whose load kept no archive).
    Rebuild(RebuildArgs),
    /// Start sandbox upstreams in-process, authorise every source against them, load the last
    /// week of every dataset into the configured (or embedded) database, and show the result.
    Demo,
    /// Authorise sources and inspect their tokens.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Work with the vendors' GraphQL schemas (the files the typed queries are checked against).
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Files for analysts' dbt projects.
    #[command(subcommand)]
    Dbt(DbtCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum DbtCommand {
    /// Write a dbt sources.yml for the vendor schemas: every table and column with its
    /// description, `_loaded_at` as loaded_at_field, and freshness limits from the jobs' schedules.
    Sources(dbt::SourcesArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Fetch a source's GraphQL schema by introspection (authenticated, rate-limited, retried
    /// like every call) and write it as SDL, by default to schemas/<kind>.graphql; rebuild
    /// afterwards to type-check every query against it.
    Pull(schema::PullArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Authorise an authorization-code source (Roubler, Retently OAuth): prints the vendor's
    /// authorize URL, then takes the browser's redirect on the loopback redirect_uri or as a
    /// pasted URL, checks its state, and stores the tokens.
    Login {
        /// Source name from the configuration.
        source: String,
    },
    /// Per source: auth flow, state, token expiry, last refresh and refresh-chain age (no secrets).
    Status,
    /// Fetch or refresh a source's token now, proving the stored authorisation still works.
    Refresh {
        /// Source name from the configuration.
        source: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Introspect each configured GraphQL source (authenticated and rate-limited like a run) and
    /// check every compiled query against its live schema: one line per missing or changed field,
    /// exit code 1 on any drift. Retently (REST) is skipped.
    #[arg(long)]
    pub upstream: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Run the selected jobs once and exit instead of scheduling them.
    #[arg(long)]
    pub once: bool,
    /// With --once: only this job (repeat for several). Default: every job.
    #[arg(long = "job", value_name = "NAME", requires = "once")]
    pub jobs: Vec<String>,
    /// With --once: backfill from this date (inclusive; 00:00 UTC, and for local-day datasets such as
    /// Roubler location_sales each location's own local day), in the vendor's legal window sizes.
    #[arg(long, value_name = "DATE", requires_all = ["once", "to"])]
    pub from: Option<NaiveDate>,
    /// With --once: backfill up to this date (exclusive), read the same way as --from.
    #[arg(long, value_name = "DATE", requires_all = ["once", "from"])]
    pub to: Option<NaiveDate>,
}

#[derive(Debug, Args)]
pub(crate) struct RebuildArgs {
    /// The job to rebuild.
    #[arg(long, value_name = "NAME")]
    pub job: String,
    /// Only windows overlapping [--from, --to) (UTC days); snapshots are always rebuilt.
    #[arg(long, value_name = "DATE", requires = "to")]
    pub from: Option<NaiveDate>,
    /// End (exclusive) of the range, read as --from is.
    #[arg(long, value_name = "DATE", requires = "from")]
    pub to: Option<NaiveDate>,
}

/// Parses arguments, loads configuration, sets up logging and runs the command.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match crate::app::load_settings(&ConfigSource::from_cli(cli.config.clone())) {
        Ok(settings) => settings,
        Err(error) => {
            eprint!("error: {error}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(
        cli.log_format.unwrap_or(settings.log.format),
        settings.log.level.as_deref(),
    );
    match run_command(cli.command, settings).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            // A schema this binary cannot work with is the operator's to fix, like bad arguments.
            if error.downcast_ref::<InvalidArguments>().is_some()
                || error.chain().any(|cause| cause.is::<store::SchemaMismatch>())
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Arguments that name something not configured or that contradict each other (`--job nosuch`,
/// `--from` after `--to`): exit code 2, like a bad configuration, before anything runs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidArguments(pub String);

async fn run_command(command: Command, settings: Settings) -> Result<ExitCode> {
    match command {
        Command::Check(CheckArgs { upstream: false }) => {
            print!("{}", check_summary(&settings));
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(CheckArgs { upstream: true }) => upstream_check::check_upstream(settings).await,
        Command::Migrate => {
            let store = Database::open(&settings.database).await?;
            let version = store::migrations::binary_version();
            println!("Database is at schema {version}, this binary's newest.");
            store.close().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { job, limit } => {
            let store = Database::open_read_only(&settings.database).await?;
            let rows = runs::recent(store.pool(), job.as_deref(), limit).await?;
            print!("{}", runs_table(&rows));
            let usage = shared_budget::usage(store.pool(), limit).await?;
            print!("{}", budget_table(&usage));
            print!("{}", limits_table(&shared_budget::limits(store.pool()).await?));
            print!(
                "{}",
                archive_table(&crate::archive::store::sizes(store.pool()).await?)
            );
            store.close().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs => {
            let store = Database::open_read_only(&settings.database).await?;
            let last = runs::last_outcomes(store.pool()).await?;
            store.close().await?;
            print!("{}", jobs_table(&settings, &last));
            Ok(ExitCode::SUCCESS)
        }
        Command::Auth(command) => auth_command(command, settings).await,
        Command::Schema(SchemaCommand::Pull(args)) => schema::pull(args, settings).await,
        Command::Dbt(DbtCommand::Sources(args)) => dbt::sources(args, settings).await,
        #[cfg(feature = "sandbox")]
        Command::Demo => demo::run(settings).await,
        #[cfg(not(feature = "sandbox"))]
        Command::Demo => {
            anyhow::bail!("this build has no sandbox upstreams (built without the `sandbox` feature)")
        }
        Command::Run(args) if args.once => run::once(args, settings).await,
        Command::Rebuild(args) => run::rebuild(args, settings).await,
        Command::Run(_) => crate::service::run(settings).await,
    }
}

async fn auth_command(command: AuthCommand, settings: Settings) -> Result<ExitCode> {
    // Runs no jobs: not registered as a process, and never sweeps others' runs. `status` only
    // reads, so it neither migrates nor needs a role that may.
    let store = match command {
        AuthCommand::Status => Database::open_read_only(&settings.database).await?,
        _ => Database::open(&settings.database).await?,
    };
    let result = match command {
        AuthCommand::Login { source } => {
            let mut stdout = std::io::stdout();
            auth::login::login(
                &settings,
                store.pool().clone(),
                &source,
                detached_stdin(),
                &mut stdout,
            )
            .await
        }
        AuthCommand::Status => match auth::status(&settings, store.pool().clone()).await {
            Ok(rows) => {
                print!("{}", auth_status_table(&rows));
                let unusable: Vec<&str> = rows
                    .iter()
                    .filter(|row| !row.usable)
                    .map(|row| row.source.as_str())
                    .collect();
                if !unusable.is_empty() {
                    eprintln!("error: not usable now: {}", unusable.join(", "));
                    store.close().await?;
                    return Ok(ExitCode::FAILURE);
                }
                Ok(())
            }
            Err(error) => Err(error),
        },
        AuthCommand::Refresh { source } => {
            let registry = auth::build(&settings, store.pool().clone());
            match registry.get(&source) {
                None => Err(InvalidArguments(format!("`{source}` is not a configured source")).into()),
                Some(provider) => provider.renew_now().await.map_err(Into::into).map(|_| {
                    println!("Renewed the token of `{source}`.");
                }),
            }
        }
    };
    store.close().await?;
    result.map(|()| ExitCode::SUCCESS)
}

/// Standard input read on a plain thread: tokio's own stdin reader would keep the runtime (and
/// so the process) alive after the login finished through the loopback listener.
fn detached_stdin() -> impl tokio::io::AsyncBufRead + Unpin {
    use std::io::BufRead;
    let (reader, mut writer) = tokio::io::duplex(64 * 1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let sent = futures::executor::block_on(tokio::io::AsyncWriteExt::write_all(
                &mut writer,
                format!("{line}\n").as_bytes(),
            ));
            if sent.is_err() {
                break;
            }
        }
    });
    tokio::io::BufReader::new(reader)
}
