//! Altrata: events and profiles (persons and organisations) of the source's watch-list, loaded
//! as snapshots: every run replaces all of the source's rows, so an id dropped from the
//! watch-list (or an event withdrawn upstream) disappears with the next run.
//!
//! Events are cursor-paged (`pageInfo {first, after}` → `pageInfoResponse.pageInfo.endCursor`).
//! They come newest first, so an event published while paging shifts later pages by one and
//! may repeat a row; the writer's upsert absorbs that. Altrata accepts no named fragments, so
//! the queries use plain selections. Dates keep their precision (`DAY`, `MONTH`, `YEAR`).

use anyhow::Context;
use chrono::NaiveDate;
use graphql_client::GraphQLQuery;
use serde_json::{Value, json};

use crate::catalog::{Dataset, DatasetInfo, WindowPolicy};
use crate::datasets::instant::Instant;
use crate::datasets::rows::{TableRow, table_row};
use crate::datasets::sink::{Replace, Sink, TableSpec, Writer};
use crate::datasets::{LoadFigures, LoadRequest, ScopeTarget, Tuning};
use super::super::{CompiledQuery, compiled};
use crate::executor::{Executor, ScopeHeader};
use crate::failure::Failure;

/// The scalars as the generated code sees them (`Date` is AppSync's `AWSDate`).
type DateTime = Instant;
type Date = NaiveDate;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/altrata.graphql",
    query_path = "queries/altrata/events.graphql",
    response_derives = "Debug"
)]
pub struct Events;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/altrata.graphql",
    query_path = "queries/altrata/person_profile.graphql",
    response_derives = "Debug"
)]
pub struct PersonProfile;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/altrata.graphql",
    query_path = "queries/altrata/organization_profile.graphql",
    response_derives = "Debug"
)]
pub struct OrganizationProfile;

/// Every query a drift check walks (the derives above include the same files; a unit test keeps this list and `queries/` in step).
pub(super) const QUERIES: &[CompiledQuery] = &[
    compiled!(super::EVENTS, "queries/altrata/events.graphql"),
    compiled!(super::PROFILE, "queries/altrata/person_profile.graphql"),
    compiled!(super::PROFILE, "queries/altrata/organization_profile.graphql"),
];

table_row! {
    /// An event about a watched person or organisation (`altrata.events`); `subject_id` is the
    /// watch-list id the event was read for.
    pub struct EventRow<'a> in "altrata.events" {
        key: [subject_id, event_id],
        columns: {
            subject_id: &'a str,
            event_id: String,
            event_type: Option<String>,
            event_text: Option<String>,
            event_date: Option<Date>,
            event_date_precision: Option<String>,
            event_display_date: Option<String>,
            announcement_date: Option<Date>,
            announcement_date_precision: Option<String>,
            announcement_display_date: Option<String>,
            event_published_date: Option<Date>,
            start_role_title: Option<String>,
            end_role_title: Option<String>,
            person_mentions: Option<Value>,
            organization_mentions: Option<Value>,
        }
    }
}

table_row! {
    /// A person or organisation profile (`altrata.profiles`): one table for both kinds, the
    /// columns one kind lacks left NULL.
    pub struct ProfileRow in "altrata.profiles" {
        key: [altrata_id],
        columns: {
            altrata_id: String,
            kind: &'static str,
            name: Option<String>,
            first_name: Option<String>,
            last_name: Option<String>,
            title: Option<String>,
            primary_organization_id: Option<String>,
            primary_organization_name: Option<String>,
            industry: Option<String>,
            country: Option<String>,
            city: Option<String>,
            employee_count: Option<i64>,
            website: Option<String>,
            net_worth_usd: Option<f64>,
            revenue_usd: Option<f64>,
            wx_person_id: Option<String>,
            updated_at: Option<DateTime>,
        }
    }
}

/// Events about watched people and organisations (not the events service, [`super::EVENTS`]).
pub const EVENTS: Dataset = Dataset::new(&DatasetInfo::new(
    super::KIND,
    "events",
    "altrata.events",
    WindowPolicy::Snapshot,
));
/// Person and organisation profiles of the watch-list.
pub const PROFILES: Dataset = Dataset::new(&DatasetInfo::new(
    super::KIND,
    "profiles",
    "altrata.profiles",
    WindowPolicy::Snapshot,
));

/// Altrata's datasets, in the order the README lists them.
pub const DATASETS: &[Dataset] = &[EVENTS, PROFILES];

pub(crate) fn table(dataset: Dataset) -> Option<&'static TableSpec> {
    Some(match dataset {
        EVENTS => EventRow::spec(),
        PROFILES => ProfileRow::spec(),
        _ => return None,
    })
}

/// Warnings repeat per id (one `deprecated` note per person); keep each text once and cap the
/// list so a run record stays readable.
fn add_warnings(all: &mut Vec<String>, new: Vec<String>) {
    const MAX: usize = 50;
    for warning in new {
        if all.len() < MAX && !all.contains(&warning) {
            all.push(warning);
        }
    }
}

pub(crate) async fn load(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    let ScopeTarget::WatchList(ids) = request.scope else {
        anyhow::bail!(
            "altrata datasets are loaded for a watch-list, not for {}",
            request.scope.describe()
        );
    };
    match request.dataset.id() {
        EVENTS => load_events(exec, sink, request, ids, tuning).await,
        PROFILES => load_profiles(exec, sink, request, ids, tuning).await,
        other => anyhow::bail!("altrata has no dataset {other}"),
    }
}

fn precision(p: events::DatePrecision) -> String {
    use events::DatePrecision as P;
    match p {
        P::DAY => "DAY".into(),
        P::MONTH => "MONTH".into(),
        P::YEAR => "YEAR".into(),
        P::Other(other) => other,
    }
}

/// An `(altrataId, name)` pair of a mention.
type Mention = (Option<String>, Option<String>);

fn mentions(list: Option<Vec<Option<Mention>>>) -> Option<Value> {
    list.map(|items| {
        Value::Array(
            items
                .into_iter()
                .flatten()
                .map(|(id, name)| json!({"altrataId": id, "name": name}))
                .collect(),
        )
    })
}

async fn load_events(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    ids: &[String],
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    let mut writer = Writer::open(sink, EventRow::spec(), request.source_name, request.run_id).await?;
    writer.replace(sink, &Replace::All { scope: None }).await?;
    let mut warnings = Vec::new();
    // `pageInfo.first`: the sandbox and, presumably, the vendor allow at most 50.
    let first = tuning.page_size(super::KIND, 50);
    for id in ids {
        let mut after: Option<String> = None;
        // Every cursor followed so far: an upstream cycling through cursors (A → B → A) would
        // otherwise be paged forever.
        let mut followed = std::collections::HashSet::new();
        let mut page = 0;
        loop {
            page += 1;
            let outcome = exec
                .execute::<Events>(
                    request.call,
                    super::EVENTS,
                    &ScopeHeader::None,
                    events::Variables {
                        altrata_id: id.clone(),
                        first,
                        after: after.clone(),
                    },
                )
                .await
                .with_context(|| format!("fetching page {page} of altrata.events for {id}"))?;
            writer.pages += 1;
            add_warnings(&mut warnings, outcome.warnings);
            let Some(response) = outcome.data.events else {
                break;
            };
            let mut skipped = 0;
            let rows: Vec<EventRow> = response
                .items
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    if e.event_id.trim().is_empty() {
                        skipped += 1;
                        return None;
                    }
                    let (date, date_precision, display) = e.event_date_info.map_or((None, None, None), |d| {
                        (d.date, d.date_precision.map(precision), d.display_date)
                    });
                    let (a_date, a_precision, a_display) =
                        e.announcement_date_info.map_or((None, None, None), |d| {
                            (d.date, d.date_precision.map(precision), d.display_date)
                        });
                    let persons = mentions(
                        e.person_mentions
                            .map(|l| l.into_iter().map(|m| m.map(|m| (m.altrata_id, m.name))).collect()),
                    );
                    let organizations = mentions(
                        e.organization_mentions
                            .map(|l| l.into_iter().map(|m| m.map(|m| (m.altrata_id, m.name))).collect()),
                    );
                    Some(EventRow {
                        subject_id: id,
                        event_id: e.event_id,
                        event_type: e.event_type,
                        event_text: e.event_text,
                        event_date: date,
                        event_date_precision: date_precision,
                        event_display_date: display,
                        announcement_date: a_date,
                        announcement_date_precision: a_precision,
                        announcement_display_date: a_display,
                        event_published_date: e.event_published_date,
                        start_role_title: e.start_role_title,
                        end_role_title: e.end_role_title,
                        person_mentions: persons,
                        organization_mentions: organizations,
                    })
                })
                .collect();
            writer
                .write(sink, rows)
                .await
                .with_context(|| format!("writing page {page} of altrata.events for {id}"))?;
            if skipped > 0 {
                add_warnings(
                    &mut warnings,
                    vec![format!("events without an eventId were skipped for {id}")],
                );
            }
            let info = response.page_info_response.and_then(|p| p.page_info);
            let (more, cursor) = info.map_or((None, None), |i| (i.has_next_page, i.end_cursor));
            match (more, cursor) {
                (Some(true), Some(cursor)) if !followed.contains(&cursor) => {
                    followed.insert(cursor.clone());
                    after = Some(cursor)
                }
                // Stopping here would keep a partial list as if it were complete (and the
                // refresh would delete what was not read): the load fails instead.
                (Some(true), Some(_)) => {
                    return Err(Failure::invalid_answer(format!(
                        "altrata.events for {id}: page {page} points back to a cursor this load already followed; \
                         the upstream is cycling through its pages, so the load stopped and nothing of it is kept"
                    ))
                    .into());
                }
                (Some(true), None) => {
                    return Err(Failure::invalid_answer(format!(
                        "altrata.events for {id}: page {page} says more pages follow but gives no cursor to them; \
                         the load stopped and nothing of it is kept"
                    ))
                    .into());
                }
                _ => break,
            }
        }
    }
    writer.finish(sink, warnings).await
}

async fn load_profiles(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    ids: &[String],
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    let mut writer = Writer::open(sink, ProfileRow::spec(), request.source_name, request.run_id).await?;
    writer.replace(sink, &Replace::All { scope: None }).await?;
    let mut warnings = Vec::new();
    let mut rows: Vec<ProfileRow> = Vec::new();
    for id in ids {
        let row: Option<ProfileRow> = if id.starts_with("1-per-") {
            let outcome = exec
                .execute::<PersonProfile>(
                    request.call,
                    super::PROFILE,
                    &ScopeHeader::None,
                    person_profile::Variables {
                        altrata_id: id.clone(),
                    },
                )
                .await
                .with_context(|| format!("fetching the altrata person profile {id}"))?;
            add_warnings(&mut warnings, outcome.warnings);
            outcome.data.person_id_search.map(|p| ProfileRow {
                altrata_id: p.altrata_id,
                kind: "person",
                name: p.full_name,
                first_name: p.first_name,
                last_name: p.last_name,
                title: p.title,
                primary_organization_id: p.primary_organization_id,
                primary_organization_name: p.primary_organization_name,
                industry: None,
                country: p.country,
                city: p.city,
                employee_count: None,
                website: None,
                net_worth_usd: p.net_worth_usd,
                revenue_usd: None,
                wx_person_id: p.wx_person_id,
                updated_at: p.updated_at,
            })
        } else if id.starts_with("1-org-") {
            let outcome = exec
                .execute::<OrganizationProfile>(
                    request.call,
                    super::PROFILE,
                    &ScopeHeader::None,
                    organization_profile::Variables {
                        altrata_id: id.clone(),
                    },
                )
                .await
                .with_context(|| format!("fetching the altrata organisation profile {id}"))?;
            add_warnings(&mut warnings, outcome.warnings);
            outcome.data.organization_id_search.map(|o| ProfileRow {
                altrata_id: o.altrata_id,
                kind: "organization",
                name: o.name,
                first_name: None,
                last_name: None,
                title: None,
                primary_organization_id: None,
                primary_organization_name: None,
                industry: o.industry,
                country: o.country,
                city: None,
                employee_count: o.employee_count,
                website: o.website,
                net_worth_usd: None,
                revenue_usd: o.revenue_usd,
                wx_person_id: None,
                updated_at: o.updated_at,
            })
        } else {
            add_warnings(
                &mut warnings,
                vec![format!(
                    "{id:?} is neither a person (1-per-…) nor an organisation (1-org-…) id; skipped"
                )],
            );
            continue;
        };
        writer.pages += 1;
        // A profile of another id than the one asked for belongs to no watched id: storing it
        // would put a stranger in the table under a key nobody asked for.
        if let Some(other) = row
            .as_ref()
            .map(|r| r.altrata_id.trim())
            .filter(|other| other != id)
        {
            let shown: String = other.chars().take(64).collect();
            return Err(Failure::invalid_answer(format!(
                "asked altrata for the profile of {id}, it answered with {shown}; nothing of the load is kept"
            ))
            .into());
        }
        match row {
            Some(row) => rows.push(row),
            None => add_warnings(&mut warnings, vec![format!("altrata has no profile for {id}")]),
        }
        if rows.len() >= tuning.flush_rows {
            writer.write(sink, std::mem::take(&mut rows)).await?;
        }
    }
    writer.write(sink, rows).await?;
    writer.finish(sink, warnings).await
}
