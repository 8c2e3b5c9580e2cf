//! `check --upstream`: schema drift found before a run fails on it.
//!
//! Every configured GraphQL source (Retarus, Roubler, Altrata's events and profile services) is
//! introspected through the executor, exactly as `schema pull` does (auth, the shared rate budget
//! and retries apply), and every query compiled into this binary for that vendor is checked
//! against the live schema by [`super::drift`]. One line per problem on stdout, naming the
//! source, the query file and the field (or argument, input field, enum value, type); exit code 1
//! when anything drifted (a run of the query's dataset would fail) or a source could not be
//! introspected. A change the generated types still decode (a scalar renamed while its values
//! travel as the same JSON) is a line marked `notice:` and leaves the exit code 0: failing the
//! check for it would cry wolf. Retently has a REST API and no schema to ask: it is skipped, and
//! the output says so.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::drift::{self, SchemaModel, Severity};
use super::schema;
use crate::config::Settings;
use crate::vendors;

/// `check --upstream`.
pub(crate) async fn check_upstream(settings: Settings) -> Result<ExitCode> {
    let settings = Arc::new(settings);
    let (store, executor) = schema::open_executor(settings.clone(), "check --upstream").await?;
    let mut checked = 0usize;
    let mut sources = 0usize;
    let mut drifted = 0usize;
    let mut problems = 0usize;
    let mut notices = 0usize;
    let mut unreachable = 0usize;
    for (name, source) in &settings.sources {
        let kind = source.kind();
        let Some(graphql) = vendors::graphql(kind) else {
            println!("{name}: skipped: a {kind} source has a REST API, no GraphQL schema to check");
            continue;
        };
        sources += 1;
        let expected = SchemaModel::from_sdl(graphql.schema)
            .with_context(|| format!("the compiled schema of {kind} does not parse"))?;
        for &service in graphql.services {
            let live = schema::introspect(&executor, name, service)
                .await
                .and_then(|answer| SchemaModel::from_introspection(&answer.schema));
            let live = match live {
                Ok(live) => live,
                Err(error) => {
                    unreachable += 1;
                    println!(
                        "{name}: could not introspect the {} service: {error:#}",
                        service.name()
                    );
                    continue;
                }
            };
            for query in graphql.queries.iter().filter(|q| q.service == service) {
                checked += 1;
                let found = drift::check_query(query.text, &expected, &live)
                    .with_context(|| format!("{}: the compiled query does not parse", query.path))?;
                if found.iter().any(|p| p.severity == Severity::Breaks) {
                    drifted += 1;
                }
                for problem in found {
                    match problem.severity {
                        Severity::Breaks => {
                            problems += 1;
                            println!("{name}: {}: {problem}", query.path);
                        }
                        Severity::Notice => {
                            notices += 1;
                            println!("{name}: {}: notice: {problem}", query.path);
                        }
                    }
                }
            }
        }
    }
    store.close().await?;

    let summary = format!(
        "{checked} {} checked against {sources} {}",
        plural(checked, "query", "queries"),
        plural(sources, "source", "sources")
    );
    let notes = match notices {
        0 => String::new(),
        n => format!(
            "; {n} {} of a renamed type whose values still decode",
            plural(n, "notice", "notices")
        ),
    };
    if problems == 0 && unreachable == 0 {
        println!("{summary}, no drift{notes}.");
        if notices > 0 {
            println!(
                "Runs are not affected. `reporting-etl schema pull SOURCE` writes the live schema to \
                 schemas/ to bring the compiled one up to date."
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut outcome = Vec::new();
    if problems > 0 {
        outcome.push(format!(
            "{problems} {} in {drifted} {}",
            plural(problems, "problem", "problems"),
            plural(drifted, "query", "queries")
        ));
    }
    if unreachable > 0 {
        outcome.push(format!(
            "{unreachable} {} not introspected",
            plural(unreachable, "service", "services")
        ));
    }
    println!("{summary}: {}{notes}.", outcome.join(", "));
    if problems > 0 {
        println!(
            "The live schema no longer fits these queries: runs of their datasets will fail. \
             `reporting-etl schema pull SOURCE` writes the live schema to schemas/; rebuild to see \
             where the queries must change."
        );
    }
    Ok(ExitCode::FAILURE)
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query file added under `queries/` must be checked too: the vendors' lists and the
    /// directory agree.
    #[test]
    fn every_query_file_is_in_the_list_once() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut on_disk = Vec::new();
        for vendor in std::fs::read_dir(root.join("queries")).expect("queries/") {
            let vendor = vendor.expect("entry").path();
            for file in std::fs::read_dir(&vendor).expect("vendor dir") {
                let path = file.expect("entry").path();
                let relative = path.strip_prefix(root).expect("under the root");
                on_disk.push(relative.to_string_lossy().into_owned());
            }
        }
        on_disk.sort();
        let mut listed: Vec<String> = vendors::graphql_vendors()
            .filter_map(|(_, graphql)| graphql)
            .flat_map(|graphql| graphql.queries.iter().map(|q| q.path.to_owned()))
            .collect();
        listed.sort();
        assert_eq!(listed, on_disk);
    }

    /// The compiled queries fit the compiled schemas (the build's own check, seen by this checker).
    #[test]
    fn every_compiled_query_fits_its_compiled_schema() {
        for (_, graphql) in vendors::graphql_vendors() {
            let Some(graphql) = graphql else { continue };
            let schema = SchemaModel::from_sdl(graphql.schema).expect("compiled schema parses");
            for query in graphql.queries {
                let problems = drift::check_query(query.text, &schema, &schema).expect("query parses");
                assert!(problems.is_empty(), "{}: {problems:?}", query.path);
            }
        }
    }
}
