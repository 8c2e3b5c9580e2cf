//! reporting-etl: extracts reporting data from vendor APIs on cron schedules and loads it into
//! PostgreSQL, with a record of every run.
//!
//! # Layout
//!
//! The modules follow the flow of data:
//!
//! - [`config`]: TOML + environment → validated, typed settings (sources, jobs, database, ...).
//! - [`auth`]: one token provider per source (tokens shared through `etl.tokens`).
//! - [`executor`]: the one rate-limited, retrying path to every upstream.
//! - [`datasets`]: what each vendor offers, how it is windowed, and which table it fills.
//! - [`jobs`]: schedules (fire times in a job's time zone) and, with the runner, runs.
//! - [`app`]: the composition root wiring store, auth, executor and runner for every command.
//! - [`service`]: `run`: the scheduler, health and metrics endpoints, graceful shutdown.
//! - [`store`]: PostgreSQL: pool, migrations, the embedded default server, run records.
//! - [`stages`]: per-stage timers of the data path (read by the load benchmark).
//! - [`cli`]: the command line; [`telemetry`]: logging; `demo`: the one-command tour against
//!   the in-process sandbox upstreams (default `sandbox` feature).

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod datasets;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod executor;
pub mod jobs;
pub mod service;
pub mod stages;
pub mod store;
pub mod telemetry;
