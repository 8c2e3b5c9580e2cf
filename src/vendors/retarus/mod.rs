//! Retarus (fax, SMS and e-mail usage records): a GraphQL reporting API with OAuth2 client
//! credentials, paged by `page`/`size`, 45 days per request and 90 days of history
//! (`docs/vendors/retarus.md`). Its scopes are the configured customer ids.

mod answers;
pub mod datasets;
mod page;
mod settings;

use futures::future::BoxFuture;

use super::{Graphql, ScopeQuery, Vendor};
use crate::catalog::{Dataset, SourceKind};

use crate::config::{Scope, SectionKind, parse_section};
use crate::datasets::{LoadFigures, LoadRequest, ScopeTarget, Sink, TableSpec, Tuning};
use crate::executor::{Executor, Service};
pub use settings::RetarusSettings;

pub(super) struct Retarus;

/// `kind = "retarus"`, also the database schema of its tables.
pub const KIND: SourceKind = SourceKind::new("retarus");

/// The `kind = "retarus"` section's reader.
pub(super) const SECTION: SectionKind = SectionKind {
    kind: KIND,
    parse: parse_section::<RetarusSettings>,
};

impl Vendor for Retarus {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn graphql(&self) -> Option<&'static Graphql> {
        Some(&Graphql {
            schema: include_str!("../../../schemas/retarus.graphql"),
            services: &[Service::DEFAULT],
            queries: datasets::QUERIES,
        })
    }

    fn table(&self, dataset: Dataset) -> Option<&'static TableSpec> {
        datasets::table(dataset)
    }

    /// `all` → the source's `customer_ids`; a list → those customer ids. No call.
    fn scopes<'a>(&'a self, job: ScopeQuery<'a>) -> BoxFuture<'a, anyhow::Result<Vec<ScopeTarget>>> {
        Box::pin(async move {
            let Some(settings) = job.source.section::<RetarusSettings>() else {
                anyhow::bail!("source {} is not a Retarus source", job.source_name);
            };
            let ids = match job.configured {
                Scope::All => &settings.customer_ids,
                Scope::Ids(ids) => ids,
            };
            Ok(ids.iter().cloned().map(ScopeTarget::Customer).collect())
        })
    }

    fn load<'a>(
        &'a self,
        exec: &'a Executor,
        sink: &'a mut Sink,
        request: &'a LoadRequest<'a>,
        tuning: &'a Tuning,
    ) -> BoxFuture<'a, anyhow::Result<LoadFigures>> {
        Box::pin(datasets::load(exec, sink, request, tuning))
    }
}
