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

impl ScopeTarget {
    /// The scope as the archive keeps it (`archive.windows.scope_target`), so that a rebuild
    /// loads it as the load did without discovering it again.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            ScopeTarget::Customer(id) => json!({ "customer": id }),
            ScopeTarget::Company(id) => json!({ "company": id }),
            ScopeTarget::Location {
                company,
                id,
                time_zone,
            } => json!({ "location": id, "company": company, "time_zone": time_zone.name() }),
            ScopeTarget::WatchList(ids) => json!({ "watch_list": ids }),
            ScopeTarget::Account => json!({ "account": true }),
        }
    }

    /// A scope kept by [`ScopeTarget::to_json`]; `None` when `value` is not one.
    pub fn from_json(value: &serde_json::Value) -> Option<ScopeTarget> {
        let text = |key: &str| value.get(key)?.as_str().map(str::to_owned);
        if let Some(id) = text("location") {
            return Some(ScopeTarget::Location {
                company: text("company")?,
                id,
                time_zone: text("time_zone")?.parse().ok()?,
            });
        }
        if let Some(id) = text("customer") {
            return Some(ScopeTarget::Customer(id));
        }
        if let Some(id) = text("company") {
            return Some(ScopeTarget::Company(id));
        }
        if let Some(ids) = value.get("watch_list") {
            let ids = ids.as_array()?;
            return ids
                .iter()
                .map(|id| id.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(ScopeTarget::WatchList);
        }
        (value.get("account") == Some(&serde_json::Value::Bool(true))).then_some(ScopeTarget::Account)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_scope_comes_back_from_the_archive_as_it_was() {
        let scopes = [
            ScopeTarget::Customer("99999".into()),
            ScopeTarget::Company("7".into()),
            ScopeTarget::Location {
                company: "7".into(),
                id: "10101".into(),
                time_zone: chrono_tz::Australia::Sydney,
            },
            ScopeTarget::WatchList(vec!["1-per-1".into(), "1-org-2".into()]),
            ScopeTarget::Account,
        ];
        for scope in scopes {
            assert_eq!(
                ScopeTarget::from_json(&scope.to_json()),
                Some(scope.clone()),
                "{scope:?}"
            );
        }
        assert_eq!(
            ScopeTarget::from_json(&serde_json::json!({ "location": "1" })),
            None
        );
        assert_eq!(ScopeTarget::from_json(&serde_json::json!(42)), None);
    }
}
