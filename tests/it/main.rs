//! The integration tests, one binary: every module runs the real library or binary against real
//! PostgreSQL and the sandbox upstreams over loopback. One binary links the crate once, and
//! `support` is compiled once for all of them.

mod support;

mod archive;
mod auth;
mod config;
mod datasets;
mod datasets_e2e;
mod db_restart;
mod dictionary;
mod discovery_cache;
mod embedded_placement;
mod executor;
mod failure_kinds;
mod hardening_input;
mod hardening_outage;
mod hardening_security;
mod hostile_config;
mod hostile_property;
mod hostile_upstream;
mod operator;
mod rate_policy;
mod replicas;
mod schema_pull;
mod service;
mod short_transactions;
mod soak;
mod store;
mod upgrades;
mod upstream_check;
mod upstream_trust;
