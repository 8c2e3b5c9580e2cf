//! What the rate-limit benchmarks share: the cheapest Roubler call, knobs from the environment,
//! an authorised Roubler source, and tasks that spend a number of calls through one executor.

#![allow(dead_code)] // each benchmark uses its own part

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use reporting_etl::auth::store::{NewTokens, TokenStore};
use reporting_etl::auth::{AccessToken, RefreshToken};
use reporting_etl::executor::{CallContext, Executor, ScopeHeader, Service};
use sandbox::Sandbox;
use serde_json::json;
use sqlx::PgPool;

pub use super::support::RoublerLocations as Locations;

/// A number from the environment variable `name`, or `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Calls that were the (limit+1)-th or later within the window ending at their arrival.
pub fn over_limit_calls(mut times: Vec<tokio::time::Instant>, window: Duration, limit: usize) -> usize {
    times.sort();
    let mut first = 0;
    let mut over = 0;
    for (last, at) in times.iter().enumerate() {
        while at.duration_since(times[first]) >= window {
            first += 1;
        }
        if last + 1 - first > limit {
            over += 1;
        }
    }
    over
}

/// Stores a Roubler authorisation, as `auth login` would.
pub async fn authorise_roubler(sandbox: &Sandbox, pool: &PgPool) -> anyhow::Result<()> {
    let grant = sandbox.roubler.grant_tokens();
    let (lock, _) = TokenStore::new(pool.clone(), None)
        .lock("roubler", "authorization_code")
        .await
        .map_err(anyhow::Error::msg)?;
    let refresh = RefreshToken::new(grant.refresh_token.unwrap_or_default());
    lock.save(
        NewTokens {
            access_token: &AccessToken::new(grant.access_token),
            access_expires_at: Utc::now() + TimeDelta::seconds(grant.expires_in as i64),
            refresh_token: Some(&refresh),
        },
        true,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(())
}

/// What [`spend`] measured.
pub struct Spent {
    pub elapsed: Duration,
    pub failures: usize,
    /// The calls' shared context: retries and throttled time.
    pub call: CallContext,
}

/// `calls` Roubler calls for the sandbox's first company, made by `tasks` tasks at once.
pub async fn spend(
    executor: &Arc<Executor>,
    sandbox: &Sandbox,
    calls: usize,
    tasks: usize,
) -> anyhow::Result<Spent> {
    let company = sandbox.roubler.companies()[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let call = CallContext::new("roubler", "bench");
    let issued = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (executor, call, issued, failures) =
                (executor.clone(), call.clone(), issued.clone(), failures.clone());
            let scope = ScopeHeader::Company(company.clone());
            tokio::spawn(async move {
                while issued.fetch_add(1, Ordering::SeqCst) < calls {
                    let answer = executor
                        .execute::<Locations>(&call, Service::DEFAULT, &scope, json!({}))
                        .await;
                    if let Err(e) = answer {
                        eprintln!("{e}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    Ok(Spent {
        elapsed: started.elapsed(),
        failures: failures.load(Ordering::SeqCst),
        call,
    })
}
