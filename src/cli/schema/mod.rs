//! `schema pull SOURCE`: fetch a vendor's GraphQL schema by introspection and write it as SDL.
//!
//! The schemas under `schemas/` are reconstructed from the vendors' documentation; the typed
//! queries (`graphql_client`) are checked against them at build time. With real credentials,
//! `schema pull` replaces a reconstruction with what the vendor's server actually describes, so a
//! rebuild type-checks every query against the real schema.
//!
//! The introspection query goes through the [`Executor`] like every other upstream call, so the
//! source's auth, shared rate budget and retries apply (`check --upstream` introspects the same
//! way: see `src/cli/upstream_check.rs`). The SDL is printed in the layout of
//! async-graphql's `Schema::sdl()` (which produced the checked-in files from the sandbox): a
//! pulled schema then differs from the reconstruction only where the schemas differ, and a
//! `git diff` after a pull shows exactly what the reconstruction got wrong.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::auth;
use crate::config::{HttpUrl, Settings, SourceSettings};
use crate::executor::{CallContext, CallSetup, Executor, ExecutorOptions, ScopeHeader, Service};
use crate::store::Store;
use crate::vendors;

mod introspection;
mod sdl;

pub use introspection::{INTROSPECTION_QUERY, Introspection, IntrospectionSchema, TypeRef};
use sdl::printed;
pub use sdl::to_sdl;

/// `schema pull` arguments.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// Source name from the configuration (a source whose vendor has a GraphQL API).
    pub source: String,
    /// Where to write the SDL; `-` for stdout. Default: schemas/<kind>.graphql (relative to the
    /// working directory: run it from the repository root).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// For a vendor with several GraphQL services (Altrata: `events`, `profile`), which to ask
    /// (default: its first).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
}

/// `schema pull SOURCE [--out PATH] [--service events|profile]`
pub(crate) async fn pull(args: PullArgs, settings: Settings) -> Result<ExitCode> {
    let Some(source) = settings.sources.get(&args.source) else {
        let known: Vec<&str> = settings.sources.keys().map(String::as_str).collect();
        bail!(
            "`{}` is not a configured source (configured: {})",
            args.source,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    };
    let kind = source.kind();
    let (service, endpoint) =
        endpoint(source, args.service.as_deref()).with_context(|| format!("schema pull {}", args.source))?;
    let endpoint = display_url(&endpoint);

    let (store, executor) = open_executor(Arc::new(settings), "schema pull").await?;
    let introspection = introspect(&executor, &args.source, service).await;
    store.close().await?;
    let introspection = introspection?;
    let sdl = to_sdl(&introspection.schema)
        .with_context(|| format!("{}: the introspection result is incomplete", args.source))?;
    let text = format!(
        "# Pulled by `reporting-etl schema pull {}` from {endpoint} (GraphQL introspection):\n\
         # the schema the vendor's server describes. Pull again rather than edit by hand.\n\n{sdl}",
        args.source
    );

    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("schemas/{kind}.graphql")));
    if out.as_os_str() == "-" {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    let types = introspection.schema.types.iter().filter(|t| printed(t)).count();
    println!(
        "Wrote {} ({types} types, from `{}` at {endpoint}). Rebuild to type-check the queries against it.",
        out.display(),
        args.source
    );
    Ok(ExitCode::SUCCESS)
}

/// The store and an executor like `run`'s: auth needs the token store (Roubler's refresh chain,
/// Altrata's shared token), and the calls spend the source's rate budget shared by every process.
pub(crate) async fn open_executor(settings: Arc<Settings>, command: &str) -> Result<(Store, Executor)> {
    let store = Store::open(&settings.database, command).await?;
    let registry = auth::build(&settings, store.pool().clone());
    let executor = Executor::with_shared_budget(
        settings.clone(),
        registry,
        ExecutorOptions::default(),
        store.pool().clone(),
        store.instance().id(),
    )?;
    Ok((store, executor))
}

/// Asks `source`'s `service` for its schema with [`INTROSPECTION_QUERY`], through the executor
/// (auth, rate budget, retries).
pub(crate) async fn introspect(executor: &Executor, source: &str, service: Service) -> Result<Introspection> {
    let call = CallContext::new(source.to_owned(), "schema");
    // Introspection is schema-wide: no tenant scope, even for Roubler, whose data queries need an
    // X-Company-ID.
    let answer = executor
        .execute_raw(
            &call,
            service,
            &ScopeHeader::None,
            INTROSPECTION_QUERY,
            serde_json::json!({}),
        )
        .await?;
    for warning in &answer.warnings {
        tracing::warn!(source = %source, warning = %warning, "The introspection answer carried a warning.");
    }
    serde_json::from_value(answer.data)
        .with_context(|| format!("{source}: the answer is not an introspection result"))
}

/// The executor's service and the URL the introspection query goes to: `service` by name, or
/// the vendor's first.
pub(crate) fn endpoint(source: &SourceSettings, service: Option<&str>) -> Result<(Service, HttpUrl)> {
    let kind = source.kind();
    let Some(graphql) = vendors::graphql(kind) else {
        let with_graphql: Vec<String> = vendors::graphql_vendors()
            .filter(|(_, graphql)| graphql.is_some())
            .map(|(kind, _)| kind.to_string())
            .collect();
        bail!(
            "this is a {kind} source, which has a REST API and no GraphQL schema; schema pull works for {} sources",
            with_graphql.join(", ")
        );
    };
    let service = match service {
        None => graphql.services[0],
        Some(_) if graphql.services.len() < 2 => {
            let several: Vec<String> = vendors::graphql_vendors()
                .filter(|(_, graphql)| graphql.is_some_and(|g| g.services.len() > 1))
                .map(|(kind, _)| kind.to_string())
                .collect();
            bail!(
                "--service applies to {} sources only; this is a {kind} source",
                several.join(", ")
            )
        }
        Some(name) => *graphql
            .services
            .iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = graphql.services.iter().map(|s| s.name()).collect();
                anyhow::anyhow!(
                    "`{name}` is not a service of {kind} (one of: {})",
                    names.join(", ")
                )
            })?,
    };
    let url = source
        .part::<CallSetup>()
        .and_then(|setup| setup.graphql.into_iter().find(|(s, _)| *s == service))
        .map(|(_, url)| url)
        .with_context(|| {
            format!(
                "this {kind} source has no endpoint for its {} service",
                service.name()
            )
        })?;
    Ok((service, url))
}

/// The endpoint for the file's header and the message: without user info, query or fragment,
/// which could hold credentials.
pub(crate) fn display_url(url: &HttpUrl) -> String {
    let mut url = url.url().clone();
    // Setting these fails only for URLs that cannot have them; then there is nothing to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}
