//! Altrata (events and profiles of watched people and organisations): GraphQL services with
//! client credentials over Basic auth and an `x-api-key`, cursor paging and a daily quota
//! (`docs/vendors/altrata.md`). Its one scope is the watch-list.

pub(super) mod datasets;

use futures::future::BoxFuture;

use super::{ScopeQuery, Vendor};
use crate::catalog::Dataset;
use crate::config::{Scope, SourceSettings};
use crate::datasets::{LoadFigures, LoadRequest, ScopeTarget, Sink, TableSpec, Tuning};
use crate::executor::Executor;

pub(super) struct Altrata;

impl Vendor for Altrata {
    fn table(&self, dataset: Dataset) -> Option<&'static TableSpec> {
        datasets::table(dataset)
    }

    /// One watch-list: the source's `watch_ids`, or the job's list. No call.
    fn scopes<'a>(&'a self, job: ScopeQuery<'a>) -> BoxFuture<'a, anyhow::Result<Vec<ScopeTarget>>> {
        Box::pin(async move {
            let SourceSettings::Altrata(settings) = job.source else {
                anyhow::bail!("source {} is not an Altrata source", job.source_name);
            };
            let ids = match job.configured {
                Scope::All => settings.watch_ids.clone(),
                Scope::Ids(ids) => ids.clone(),
            };
            if ids.is_empty() {
                anyhow::bail!(
                    "source {} has no watch_ids and the job lists no ids: nothing to load",
                    job.source_name
                );
            }
            Ok(vec![ScopeTarget::WatchList(ids)])
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
