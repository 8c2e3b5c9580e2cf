//! reporting-etl: extracts reporting data from vendor APIs on cron schedules and loads it into
//! PostgreSQL, with a record of every run.
//!
//! # Layout
//!
//! The modules follow the flow of data:
//!
//! - [`catalog`]: every vendor kind, window policy and dataset, with their facts (a leaf).
//! - [`config`]: TOML + environment → validated, typed settings (sources, jobs, database, ...).
//! - [`transport`]: the one road to the outside: every upstream request (data and token alike)
//!   and the limits its answer is held to (timeouts, no redirects, body size).
//! - [`auth`]: one token provider per source (tokens shared through `etl.tokens`).
//! - [`executor`]: the one rate-limited, retrying path to every upstream.
//! - [`failure`]: why a run failed, as a closed set of kinds carried from the call to the record.
//! - [`datasets`]: the machinery loads share: windows, scopes, typed rows, the page writer.
//! - [`vendors`]: one folder per vendor: its queries, row mapping, paging, table layouts and
//!   scopes, behind one trait and a registry.
//! - [`jobs`]: schedules (fire times in a job's time zone) and, with the runner, runs.
//! - [`app`]: the composition root wiring store, auth, executor and runner for every command.
//! - [`service`]: `run`: the scheduler, health and metrics endpoints.
//! - `shutdown`: the one graceful shutdown of `run` and `run --once`.
//! - [`archive`]: every answer a window's load used, compressed, committed with its swap, and
//!   replayed by `rebuild` (no upstream call).
//! - [`store`]: PostgreSQL: pool, migrations, the embedded default server, run records.
//! - [`allocator`]: the memory allocator's settings, chosen by measurement.
//! - [`stages`]: per-stage timers of the data path (read by the load benchmark).
//! - [`cli`]: the command line, `demo` (the one-command tour against the in-process sandbox
//!   upstreams, default `sandbox` feature) among its commands; [`telemetry`]: logging.

pub mod allocator;
pub mod app;
pub mod archive;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod datasets;
pub mod executor;
pub mod failure;
pub mod jobs;
#[cfg(test)]
mod layering;
pub mod service;
mod shutdown;
pub mod stages;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod vendors;
