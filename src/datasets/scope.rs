//! Scopes: the unit a dataset is loaded per (a Retarus customer, a Roubler company or location,
//! the Altrata watch-list, the Retently account), and their discovery from a job's `scope`.

use anyhow::Context;

use super::{DatasetInfo, roubler};
use crate::config::{Scope, SourceKind, SourceSettings};
use crate::executor::{CallContext, Executor};

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
            if matches!(dataset.name, "locations" | "employees") {
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
