//! Scopes: the unit a dataset is loaded per (a Retarus customer, a Roubler company or location,
//! the Altrata watch-list, the Retently account), and their discovery from a job's `scope`.
//!
//! Only Roubler's scopes cost calls to discover (`viewer`, then `locations` per company); the
//! others come from the configuration. [`discover_scopes_cached`] keeps Roubler's answer in
//! `etl.scope_cache` for `sources.NAME.discovery_ttl_secs`, so the jobs of a source share one
//! discovery round per TTL (see `src/store/scope_cache.rs`); [`discover_scopes`] always asks.

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::roubler;
use crate::catalog::{Dataset, DatasetInfo, SourceKind};
use crate::config::{Scope, SourceSettings};
use crate::executor::{CallContext, Executor};
use crate::store::scope_cache;

/// One scope of one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeTarget {
    /// A Retarus customer id (the business id passed as `customerId`).
    Customer(String),
    /// A Roubler company (sent as `X-Company-ID`).
    Company(String),
    /// A Roubler location with the company it belongs to and its IANA time zone.
    Location {
        company: String,
        id: String,
        time_zone: chrono_tz::Tz,
    },
    /// The Altrata ids whose events / profiles are loaded.
    WatchList(Vec<String>),
    /// The whole account (Retently).
    Account,
}

impl ScopeTarget {
    /// What goes into `etl.runs.scope` and `etl.watermarks.scope`: the id, the ids joined by
    /// commas (watch-list), or `all` (account).
    pub fn key(&self) -> String {
        match self {
            ScopeTarget::Customer(id) | ScopeTarget::Company(id) => id.clone(),
            ScopeTarget::Location { id, .. } => id.clone(),
            ScopeTarget::WatchList(ids) => ids.join(","),
            ScopeTarget::Account => "all".to_owned(),
        }
    }

    /// For error messages: "customer 99999", "location 10101".
    pub fn describe(&self) -> String {
        match self {
            ScopeTarget::Customer(id) => format!("customer {id}"),
            ScopeTarget::Company(id) => format!("company {id}"),
            ScopeTarget::Location { id, company, .. } => format!("location {id} (company {company})"),
            ScopeTarget::WatchList(ids) => format!("watch-list of {} ids", ids.len()),
            ScopeTarget::Account => "the account".to_owned(),
        }
    }
}

/// The scopes a job covers.
///
/// - Retarus: `all` → the source's `customer_ids`; a list → those customer ids.
/// - Roubler company datasets (`locations`, `employees`): `all` → every company `viewer` reaches;
///   a list → those company ids.
/// - Roubler location datasets: every location (`locations` per company, with its time zone) of
///   the companies `viewer` reaches; a list keeps locations whose id *or* company id is listed.
/// - Altrata: one watch-list, the source's `watch_ids` (or the job's list).
/// - Retently: the account.
pub async fn discover_scopes(
    exec: &Executor,
    call: &CallContext,
    source_name: &str,
    source: &SourceSettings,
    dataset: &DatasetInfo,
    configured: &Scope,
) -> anyhow::Result<Vec<ScopeTarget>> {
    let listed = |id: &str| match configured {
        Scope::All => true,
        Scope::Ids(ids) => ids.iter().any(|i| i == id),
    };
    match (source, dataset.kind) {
        (SourceSettings::Retarus(settings), SourceKind::Retarus) => Ok(match configured {
            Scope::All => settings
                .customer_ids
                .iter()
                .cloned()
                .map(ScopeTarget::Customer)
                .collect(),
            Scope::Ids(ids) => ids.iter().cloned().map(ScopeTarget::Customer).collect(),
        }),
        (SourceSettings::Roubler(_), SourceKind::Roubler) => {
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
        (SourceSettings::Altrata(settings), SourceKind::Altrata) => {
            let ids = match configured {
                Scope::All => settings.watch_ids.clone(),
                Scope::Ids(ids) => ids.clone(),
            };
            if ids.is_empty() {
                anyhow::bail!(
                    "source {source_name} has no watch_ids and the job lists no ids: nothing to load"
                );
            }
            Ok(vec![ScopeTarget::WatchList(ids)])
        }
        (SourceSettings::Retently(_), SourceKind::Retently) => Ok(vec![ScopeTarget::Account]),
        (source, kind) => anyhow::bail!(
            "source {source_name} is a {} source, but dataset {kind}.{} was asked of it",
            source.kind(),
            dataset.name
        ),
    }
}

/// Where [`discover_scopes_cached`] got the scopes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveredBy {
    /// The configuration alone (no call needed).
    Configuration,
    /// `etl.scope_cache`, younger than the source's TTL (no call made).
    Cache,
    /// The vendor, just now (the answer was stored in the cache).
    Vendor,
}

/// One discovery round of a Roubler source: every company the API user reaches and each one's
/// locations with their IANA zones. Stored as JSON in `etl.scope_cache.scopes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    pub companies: Vec<DiscoveredCompany>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredCompany {
    pub id: String,
    pub locations: Vec<DiscoveredLocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredLocation {
    pub id: String,
    /// An IANA zone name (checked when discovered).
    pub time_zone: String,
}

/// Like [`discover_scopes`], but a source that discovers upstream (Roubler) uses the scopes
/// cached in `etl.scope_cache` while they are younger than its `discovery_ttl_secs`, and
/// otherwise asks for all of them at once (companies and every company's locations) and caches
/// the answer, whichever dataset asked: so the five Roubler datasets cost one round per TTL.
///
/// A cache that cannot be read or written is logged and bypassed: discovery then costs calls,
/// but the job runs. Callers that may run at once for one source should serialise calls of it
/// (the runner does), or each may ask the vendor.
#[allow(clippy::too_many_arguments)]
pub async fn discover_scopes_cached(
    exec: &Executor,
    pool: &sqlx::PgPool,
    call: &CallContext,
    source_name: &str,
    source: &SourceSettings,
    dataset: &DatasetInfo,
    configured: &Scope,
) -> anyhow::Result<(Vec<ScopeTarget>, DiscoveredBy)> {
    let Some(ttl) = source.discovery_ttl() else {
        let scopes = discover_scopes(exec, call, source_name, source, dataset, configured).await?;
        return Ok((scopes, DiscoveredBy::Configuration));
    };
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
    matches!(dataset.id, Dataset::Locations | Dataset::Employees)
}

/// The scopes of `dataset` in a discovery round, as [`discover_scopes`] would pick them.
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
        let employees = crate::catalog::find(SourceKind::Roubler, "employees").unwrap();
        let shifts = crate::catalog::find(SourceKind::Roubler, "shifts").unwrap();
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
        let shifts = crate::catalog::find(SourceKind::Roubler, "shifts").unwrap();
        let error = select(&found, shifts, &Scope::All).unwrap_err().to_string();
        assert_eq!(
            error,
            "roubler location l2 has time zone \"Mars/Olympus\", which is not an IANA zone"
        );
    }
}
