//! Scopes: the unit a dataset is loaded per (a Retarus customer, a Roubler company or location,
//! the Altrata watch-list, the Retently account). Which scopes a job covers is each vendor's
//! business (`src/vendors/<vendor>/`, `vendors::discover_scopes`).

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

/// Where `vendors::discover_scopes_cached` got the scopes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiscoveredBy {
    /// The configuration alone (no call needed).
    Configuration,
    /// `etl.scope_cache`, younger than the source's TTL (no call made).
    Cache,
    /// The vendor, just now (the answer was stored in the cache).
    Vendor,
}
