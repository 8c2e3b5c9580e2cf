//! Retarus (fax, SMS and e-mail usage records): a GraphQL reporting API with OAuth2 client
//! credentials, paged by `page`/`size`, 45 days per request and 90 days of history
//! (`docs/vendors/retarus.md`). Its scopes are the configured customer ids.

pub(super) mod datasets;
mod page;

use futures::future::BoxFuture;

use super::{ScopeQuery, Vendor};
use crate::catalog::Dataset;
use crate::config::{Scope, SourceSettings};
use crate::datasets::{LoadFigures, LoadRequest, ScopeTarget, Sink, TableSpec, Tuning};
use crate::executor::Executor;

pub(super) struct Retarus;

impl Vendor for Retarus {
    fn table(&self, dataset: Dataset) -> Option<&'static TableSpec> {
        datasets::table(dataset)
    }

    /// `all` → the source's `customer_ids`; a list → those customer ids. No call.
    fn scopes<'a>(&'a self, job: ScopeQuery<'a>) -> BoxFuture<'a, anyhow::Result<Vec<ScopeTarget>>> {
        Box::pin(async move {
            let SourceSettings::Retarus(settings) = job.source else {
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
