//! Roubler's scopes: its companies (`viewer`) and each company's locations with their IANA zones
//! (`locations`), the only scopes of any vendor that cost calls to discover.
//!
//! [`discover_cached`] keeps a discovery round in `etl.scope_cache` for
//! `sources.NAME.discovery_ttl_secs`, so the jobs of a source share one round per TTL (see
//! `src/store/scope_cache.rs`); [`discover`] always asks.

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::datasets as roubler;
use super::datasets::{EMPLOYEES, LOCATIONS};
use crate::catalog::DatasetInfo;
use crate::config::Scope;
use crate::datasets::{DiscoveredBy, ScopeTarget};
use crate::executor::{CallContext, Executor};
use crate::store::scope_cache;

/// One discovery round of a Roubler source: every company the API user reaches and each one's
/// locations with their IANA zones. Stored as JSON in `etl.scope_cache.scopes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Discovered {
    pub(crate) companies: Vec<DiscoveredCompany>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DiscoveredCompany {
    pub(crate) id: String,
    pub(crate) locations: Vec<DiscoveredLocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DiscoveredLocation {
    pub(crate) id: String,
    /// An IANA zone name (checked when discovered).
    pub(crate) time_zone: String,
}

/// The scopes of a Roubler job, asked of the vendor now.
///
/// - Company datasets (`locations`, `employees`): `all` → every company `viewer` reaches; a list
///   → those company ids.
/// - Location datasets: every location (`locations` per company, with its time zone) of the
///   companies `viewer` reaches; a list keeps locations whose id *or* company id is listed.
pub(super) async fn discover(
    exec: &Executor,
    call: &CallContext,
    source_name: &str,
    dataset: &DatasetInfo,
    configured: &Scope,
) -> anyhow::Result<Vec<ScopeTarget>> {
    let listed = |id: &str| match configured {
        Scope::All => true,
        Scope::Ids(ids) => ids.iter().any(|i| i == id),
    };
    let companies = roubler::companies(exec, call)
        .await
        .with_context(|| format!("discovering the companies of source {source_name}"))?;
    if is_company_dataset(dataset) {
        return Ok(match configured {
            Scope::All => companies.into_iter().map(ScopeTarget::Company).collect(),
            Scope::Ids(ids) => ids.iter().cloned().map(ScopeTarget::Company).collect(),
        });
    }
    let mut scopes = Vec::new();
    for company in companies {
        let locations = roubler::locations(exec, call, &company).await.with_context(|| {
            format!("discovering the locations of company {company} of source {source_name}")
        })?;
        for location in locations {
            if listed(&location.id) || listed(&company) {
                scopes.push(ScopeTarget::Location {
                    company: company.clone(),
                    id: location.id,
                    time_zone: location.time_zone,
                });
            }
        }
    }
    Ok(scopes)
}

/// Like [`discover`], but uses the scopes cached in `etl.scope_cache` while they are younger than
/// `ttl` (the source's `discovery_ttl_secs`), and otherwise asks for all of them at once
/// (companies and every company's locations) and caches the answer, whichever dataset asked: so
/// the five Roubler datasets cost one round per TTL.
///
/// A cache that cannot be read or written is logged and bypassed: discovery then costs calls,
/// but the job runs. Callers that may run at once for one source should serialise calls of it
/// (the runner does), or each may ask the vendor.
#[allow(clippy::too_many_arguments)]
pub(super) async fn discover_cached(
    exec: &Executor,
    pool: &sqlx::PgPool,
    call: &CallContext,
    source_name: &str,
    ttl: Duration,
    dataset: &DatasetInfo,
    configured: &Scope,
) -> anyhow::Result<(Vec<ScopeTarget>, DiscoveredBy)> {
    if is_company_dataset(dataset)
        && let Scope::Ids(ids) = configured
    {
        // Listed companies need no discovery at all.
        let scopes = ids.iter().cloned().map(ScopeTarget::Company).collect();
        return Ok((scopes, DiscoveredBy::Configuration));
    }
    if let Some(found) = cached(pool, source_name, ttl).await {
        return Ok((select(&found, dataset, configured)?, DiscoveredBy::Cache));
    }
    let found = discover_all(exec, call, source_name).await?;
    if !ttl.is_zero() {
        match serde_json::to_value(&found) {
            Ok(value) => {
                if let Err(error) = scope_cache::store(pool, source_name, &value).await {
                    tracing::warn!(source = source_name, error = %format!("{error:#}"),
                        "Could not cache the discovered scopes; the next job asks the vendor again.");
                }
            }
            Err(error) => {
                tracing::warn!(source = source_name, %error, "Could not encode the discovered scopes.")
            }
        }
    }
    tracing::info!(
        source = source_name,
        companies = found.companies.len(),
        locations = found.companies.iter().map(|c| c.locations.len()).sum::<usize>(),
        ttl_secs = ttl.as_secs(),
        "Discovered the scopes of the source."
    );
    Ok((select(&found, dataset, configured)?, DiscoveredBy::Vendor))
}

/// The cached round of `source_name` if fresh and readable; problems are logged and read as none.
async fn cached(pool: &sqlx::PgPool, source_name: &str, ttl: Duration) -> Option<Discovered> {
    if ttl.is_zero() {
        return None;
    }
    match scope_cache::fresh(pool, source_name, ttl).await {
        Ok(Some(value)) => match serde_json::from_value::<Discovered>(value) {
            Ok(found) => Some(found),
            Err(error) => {
                tracing::warn!(source = source_name, %error,
                    "The cached scopes do not have the expected shape; asking the vendor instead.");
                None
            }
        },
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(source = source_name, error = %format!("{error:#}"),
                "Could not read the cached scopes; asking the vendor instead.");
            None
        }
    }
}

/// One full discovery round of a Roubler source: `viewer`, then `locations` per company.
async fn discover_all(exec: &Executor, call: &CallContext, source_name: &str) -> anyhow::Result<Discovered> {
    let companies = roubler::companies(exec, call)
        .await
        .with_context(|| format!("discovering the companies of source {source_name}"))?;
    let mut found = Vec::with_capacity(companies.len());
    for company in companies {
        let locations = roubler::locations(exec, call, &company).await.with_context(|| {
            format!("discovering the locations of company {company} of source {source_name}")
        })?;
        found.push(DiscoveredCompany {
            id: company,
            locations: locations
                .into_iter()
                .map(|l| DiscoveredLocation {
                    id: l.id,
                    time_zone: l.time_zone.name().to_owned(),
                })
                .collect(),
        });
    }
    Ok(Discovered { companies: found })
}

fn is_company_dataset(dataset: &DatasetInfo) -> bool {
    [LOCATIONS, EMPLOYEES].iter().any(|d| d.info() == dataset)
}

/// The scopes of `dataset` in a discovery round, as [`discover`] would pick them.
fn select(found: &Discovered, dataset: &DatasetInfo, configured: &Scope) -> anyhow::Result<Vec<ScopeTarget>> {
    let listed = |id: &str| match configured {
        Scope::All => true,
        Scope::Ids(ids) => ids.iter().any(|i| i == id),
    };
    if is_company_dataset(dataset) {
        return Ok(match configured {
            Scope::All => found
                .companies
                .iter()
                .map(|c| ScopeTarget::Company(c.id.clone()))
                .collect(),
            Scope::Ids(ids) => ids.iter().cloned().map(ScopeTarget::Company).collect(),
        });
    }
    let mut scopes = Vec::new();
    for company in &found.companies {
        for location in &company.locations {
            if listed(&location.id) || listed(&company.id) {
                let time_zone = location.time_zone.parse::<chrono_tz::Tz>().map_err(|_| {
                    anyhow::anyhow!(
                        "roubler location {} has time zone {:?}, which is not an IANA zone",
                        location.id,
                        location.time_zone
                    )
                })?;
                scopes.push(ScopeTarget::Location {
                    company: company.id.clone(),
                    id: location.id.clone(),
                    time_zone,
                });
            }
        }
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found() -> Discovered {
        Discovered {
            companies: vec![DiscoveredCompany {
                id: "c1".into(),
                locations: vec![
                    DiscoveredLocation {
                        id: "l1".into(),
                        time_zone: "Australia/Sydney".into(),
                    },
                    DiscoveredLocation {
                        id: "l2".into(),
                        time_zone: "Europe/Berlin".into(),
                    },
                ],
            }],
        }
    }

    #[test]
    fn a_discovery_round_serves_company_and_location_datasets() {
        let employees = EMPLOYEES.info();
        let shifts = super::super::datasets::SHIFTS.info();
        assert_eq!(
            select(&found(), employees, &Scope::All).unwrap(),
            vec![ScopeTarget::Company("c1".into())]
        );
        let keys: Vec<String> = select(&found(), shifts, &Scope::All)
            .unwrap()
            .iter()
            .map(ScopeTarget::key)
            .collect();
        assert_eq!(keys, ["l1", "l2"]);
        let listed = select(&found(), shifts, &Scope::Ids(vec!["l2".into()])).unwrap();
        assert_eq!(
            listed,
            vec![ScopeTarget::Location {
                company: "c1".into(),
                id: "l2".into(),
                time_zone: chrono_tz::Europe::Berlin
            }]
        );
    }

    #[test]
    fn a_cached_zone_that_is_no_iana_zone_is_an_error_naming_the_location() {
        let mut found = found();
        found.companies[0].locations[1].time_zone = "Mars/Olympus".into();
        let shifts = super::super::datasets::SHIFTS.info();
        let error = select(&found, shifts, &Scope::All).unwrap_err().to_string();
        assert_eq!(
            error,
            "roubler location l2 has time zone \"Mars/Olympus\", which is not an IANA zone"
        );
    }
}
