//! Deterministic, loopback stand-ins for the four upstream APIs that reporting-etl reads:
//! Retarus (GraphQL + Keycloak-style client credentials), Roubler (GraphQL + Hydra-style
//! authorization code with single-use rotating refresh tokens), Altrata (GraphQL + Basic auth and
//! `x-api-key`, where a new token kills the previous one) and Retently (REST + OAuth or API key).
//!
//! The sandbox deliberately does **not** depend on the service crate: the service cannot pass its
//! tests by agreeing with itself. Everything it does follows `docs/vendors/` and the
//! vendors' own authentication documents.
//!
//! # Layout
//!
//! - [`SandboxOptions`] / [`Sandbox::start`]: start all four vendors on ephemeral loopback ports.
//! - [`faults`]: latency, 5xx, resets, timeouts, malformed JSON and GraphQL errors on demand.
//! - [`hostile`]: any part of any answer (token or data) replaced on demand, and a [`hostile::Trap`]
//!   host for redirects.
//! - [`drift`]: fields removed from a GraphQL vendor's schema, or a scalar field retyped with its
//!   values, as after a vendor's release.
//! - [`data`]: the deterministic record generator shared by every vendor.
//! - [`authcode`]: authorization-code grant with refresh tokens (rotation rules, chains, PKCE),
//!   shared by Roubler and Retently.
//! - [`ratelimit`]: fixed-window limiter (monitoring or enforcing) with a call log whose sliding
//!   maximum proves a client stayed under a limit.
//! - [`gql`]: `DateTime` / `Date` scalars, bearer/basic header parsing and GraphQL body parsing.
//! - [`retarus`], [`roubler`], [`altrata`], [`retently`]: one module per vendor: routes, auth,
//!   schema (GraphQL vendors) and a handle that tests use to inspect or steer that vendor.

pub mod altrata;
pub mod authcode;
pub mod data;
pub mod drift;
pub mod faults;
pub mod gql;
pub mod hostile;
pub mod ratelimit;
pub mod retarus;
pub mod retently;
pub mod roubler;

use chrono::{DateTime, Utc};
use std::net::SocketAddr;

/// Everything that shapes a sandbox run. `Default` gives a small, fast data set.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Seed of every generated record; the same seed and anchor give the same data.
    pub seed: u64,
    /// The instant "now" as the data generator sees it (history runs back from here).
    /// Defaults to the real clock at start, truncated to the hour, so data stays stable within a run.
    pub anchor: DateTime<Utc>,
    /// Days of history generated for time-windowed datasets.
    pub history_days: u32,
    /// Records per day per report / dataset (Retarus reports, Roubler timesheets and shifts,
    /// Retently feedback, Altrata events per watched id spread over history).
    pub records_per_day: u32,
    pub retarus: retarus::RetarusOptions,
    pub roubler: roubler::RoublerOptions,
    pub altrata: altrata::AltrataOptions,
    pub retently: retently::RetentlyOptions,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        use chrono::DurationRound;
        let now = Utc::now();
        Self {
            seed: 42,
            anchor: now.duration_trunc(chrono::TimeDelta::hours(1)).unwrap_or(now),
            history_days: 100,
            records_per_day: 5,
            retarus: Default::default(),
            roubler: Default::default(),
            altrata: Default::default(),
            retently: Default::default(),
        }
    }
}

/// A running sandbox. Dropping it stops every server.
pub struct Sandbox {
    pub retarus: retarus::RetarusHandle,
    pub roubler: roubler::RoublerHandle,
    pub altrata: altrata::AltrataHandle,
    pub retently: retently::RetentlyHandle,
    _servers: Vec<ServerGuard>,
}

impl Sandbox {
    /// Starts all four vendors, each on its own ephemeral port on 127.0.0.1.
    pub async fn start(options: SandboxOptions) -> std::io::Result<Sandbox> {
        let (retarus, g1) = retarus::start(&options).await?;
        let (roubler, g2) = roubler::start(&options).await?;
        let (altrata, g3) = altrata::start(&options).await?;
        let (retently, g4) = retently::start(&options).await?;
        Ok(Sandbox {
            retarus,
            roubler,
            altrata,
            retently,
            _servers: vec![g1, g2, g3, g4],
        })
    }
}

/// Keeps one axum server alive; aborts it on drop.
pub struct ServerGuard {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves a vendor's whole `router` (see [`serve`]) behind its [`hostile::Hostile`] layer.
pub async fn serve_vendor(router: axum::Router, hostile: &hostile::Hostile) -> std::io::Result<ServerGuard> {
    serve(router.layer(axum::middleware::from_fn_with_state(
        hostile.clone(),
        hostile::mutate,
    )))
    .await
}

/// Binds an ephemeral loopback port and serves `router` on it until the guard is dropped.
pub async fn serve(router: axum::Router) -> std::io::Result<ServerGuard> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok(ServerGuard { addr, task })
}
