//! Roubler: company snapshots (`locations`, `employees`) and per-location time windows
//! (`location_sales` by local day, `timesheets` and `shifts` by start time), plus scope discovery
//! (`viewer` → companies, `locations` → locations with their time zones).
//!
//! Roubler has no paging: every query answers a plain list, so one window is one call and the
//! windows themselves are kept small (see [`super::window`]).

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use graphql_client::GraphQLQuery;
use serde_json::{Value, json};

use crate::catalog::Dataset;
use crate::datasets::rows::{Row, instant_text};
use crate::datasets::sink::{Replace, Sink, TableSpec, Writer};
use crate::datasets::window::local_day_range;
use crate::datasets::{LoadFigures, LoadRequest, ScopeTarget};
use crate::executor::{CallContext, Executor, ScopeHeader, Service};
use crate::failure::Failure;

/// The scalars as the generated code sees them.
type DateTime = chrono::DateTime<Utc>;
type Date = NaiveDate;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/roubler.graphql",
    query_path = "queries/roubler/viewer.graphql",
    response_derives = "Debug"
)]
pub struct Viewer;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/roubler.graphql",
    query_path = "queries/roubler/locations.graphql",
    response_derives = "Debug"
)]
pub struct Locations;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/roubler.graphql",
    query_path = "queries/roubler/employees.graphql",
    response_derives = "Debug"
)]
pub struct Employees;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/roubler.graphql",
    query_path = "queries/roubler/location_sales.graphql",
    response_derives = "Debug"
)]
pub struct LocationSales;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/roubler.graphql",
    query_path = "queries/roubler/timesheets.graphql",
    response_derives = "Debug"
)]
pub struct Timesheets;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/roubler.graphql",
    query_path = "queries/roubler/shifts.graphql",
    response_derives = "Debug"
)]
pub struct Shifts;

pub(crate) static LOCATIONS: TableSpec = TableSpec {
    table: "roubler.locations",
    columns: &[
        "company_id",
        "location_id",
        "name",
        "time_zone",
        "rosterable",
        "parent_id",
    ],
    key: &["company_id", "location_id"],
    scope_column: Some("company_id"),
    window_column: None,
    column_types: crate::datasets::rows::untyped,
};

pub(crate) static EMPLOYEES: TableSpec = TableSpec {
    table: "roubler.employees",
    columns: &[
        "company_id",
        "employee_id",
        "full_name",
        "work_email",
        "status",
        "rosterable",
        "visible",
        "person_mobile",
        "person_email",
        "person_date_of_birth",
        "location_id",
        "location_name",
        "position_id",
        "position_name",
        "start_date",
        "terminated_at",
        "modified_at",
    ],
    key: &["company_id", "employee_id"],
    scope_column: Some("company_id"),
    window_column: None,
    column_types: crate::datasets::rows::untyped,
};

pub(crate) static LOCATION_SALES: TableSpec = TableSpec {
    table: "roubler.location_sales",
    columns: &[
        "location_id",
        "day",
        "company_id",
        "time_zone",
        "forecast",
        "actual",
        "hours",
        "cost",
    ],
    key: &["location_id", "day"],
    scope_column: Some("location_id"),
    window_column: Some("day"),
    column_types: crate::datasets::rows::untyped,
};

pub(crate) static TIMESHEETS: TableSpec = TableSpec {
    table: "roubler.timesheets",
    columns: &[
        "location_id",
        "timesheet_id",
        "company_id",
        "start_time",
        "end_time",
        "status",
        "hours",
        "cost",
        "variance",
        "work_type_id",
        "work_type_name",
        "work_type_applied_from_id",
        "breaks",
        "employee_id",
        "employee_name",
        "position_id",
        "position_text",
        "location_name",
        "location_time_zone",
    ],
    key: &["location_id", "timesheet_id"],
    scope_column: Some("location_id"),
    window_column: Some("start_time"),
    column_types: crate::datasets::rows::untyped,
};

pub(crate) static SHIFTS: TableSpec = TableSpec {
    table: "roubler.shifts",
    columns: &[
        "location_id",
        "shift_id",
        "company_id",
        "start_time",
        "end_time",
        "published",
        "hours",
        "breaks",
        "employee_id",
        "employee_name",
        "position_id",
        "position_text",
        "location_name",
    ],
    key: &["location_id", "shift_id"],
    scope_column: Some("location_id"),
    window_column: Some("start_time"),
    column_types: crate::datasets::rows::untyped,
};

pub(crate) fn table(dataset: Dataset) -> Option<&'static TableSpec> {
    Some(match dataset {
        Dataset::Locations => &LOCATIONS,
        Dataset::Employees => &EMPLOYEES,
        Dataset::LocationSales => &LOCATION_SALES,
        Dataset::Timesheets => &TIMESHEETS,
        Dataset::Shifts => &SHIFTS,
        _ => return None,
    })
}

/// A location found by discovery.
#[derive(Debug, Clone)]
pub(crate) struct FoundLocation {
    pub id: String,
    pub time_zone: chrono_tz::Tz,
}

/// Company ids the API user reaches (from `viewer`), in first-seen order.
pub(crate) async fn companies(exec: &Executor, call: &CallContext) -> anyhow::Result<Vec<String>> {
    let outcome = exec
        .execute::<Viewer>(call, Service::Default, &ScopeHeader::None, viewer::Variables {})
        .await
        .context("asking roubler viewer for the reachable companies")?;
    let mut ids: Vec<String> = Vec::new();
    let contexts = outcome.data.viewer.and_then(|v| v.employees).unwrap_or_default();
    for id in contexts
        .into_iter()
        .flatten()
        .filter_map(|e| e.company.and_then(|c| c.id))
    {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Every location of a company with its parsed time zone. A location with a missing or unknown
/// zone is an error: its local days cannot be computed, and guessing one would file sales
/// under the wrong day.
pub(crate) async fn locations(
    exec: &Executor,
    call: &CallContext,
    company: &str,
) -> anyhow::Result<Vec<FoundLocation>> {
    let outcome = exec
        .execute::<Locations>(
            call,
            Service::Default,
            &ScopeHeader::Company(company.to_owned()),
            locations::Variables {},
        )
        .await
        .with_context(|| format!("listing the locations of roubler company {company}"))?;
    let mut found = Vec::new();
    for location in outcome.data.locations.unwrap_or_default().into_iter().flatten() {
        let Some(id) = location.id else { continue };
        let zone = location.time_zone.unwrap_or_default();
        let time_zone = zone.trim().parse::<chrono_tz::Tz>().map_err(|_| {
            Failure::invalid_answer(format!(
                "roubler location {id} has time zone {zone:?}, which is not an IANA zone"
            ))
        })?;
        found.push(FoundLocation { id, time_zone });
    }
    Ok(found)
}

pub(crate) async fn load(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
) -> anyhow::Result<LoadFigures> {
    match (request.dataset.id, request.scope) {
        (Dataset::Locations, ScopeTarget::Company(company)) => {
            load_locations(exec, sink, request, company).await
        }
        (Dataset::Employees, ScopeTarget::Company(company)) => {
            load_employees(exec, sink, request, company).await
        }
        (
            Dataset::LocationSales | Dataset::Timesheets | Dataset::Shifts,
            ScopeTarget::Location {
                company,
                id,
                time_zone,
            },
        ) => {
            let window = request
                .window
                .with_context(|| format!("roubler.{} needs a window", request.dataset.name))?;
            let location = Place {
                company,
                id,
                time_zone: *time_zone,
            };
            match request.dataset.id {
                Dataset::LocationSales => load_sales(exec, sink, request, &location, window).await,
                Dataset::Timesheets => load_timesheets(exec, sink, request, &location, window).await,
                _ => load_shifts(exec, sink, request, &location, window).await,
            }
        }
        (name, scope) => anyhow::bail!("roubler.{name} cannot be loaded for {}", scope.describe()),
    }
}

struct Place<'a> {
    company: &'a str,
    id: &'a str,
    time_zone: chrono_tz::Tz,
}

fn figures(writer: Writer, warnings: Vec<String>) -> (LoadFigures, Writer) {
    (
        LoadFigures {
            rows: writer.rows,
            pages: writer.pages,
            warnings,
        },
        writer,
    )
}

async fn load_locations(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    company: &str,
) -> anyhow::Result<LoadFigures> {
    let mut writer = Writer::open(sink, &LOCATIONS, request.source_name, request.run_id).await?;
    writer
        .replace(
            sink,
            &Replace::All {
                scope: Some(company.to_owned()),
            },
        )
        .await?;
    let outcome = exec
        .execute::<Locations>(
            request.call,
            Service::Default,
            &ScopeHeader::Company(company.to_owned()),
            locations::Variables {},
        )
        .await
        .with_context(|| format!("fetching roubler.locations for company {company}"))?;
    writer.pages += 1;
    let mut skipped = 0;
    let rows: Vec<Row> = outcome
        .data
        .locations
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let Some(id) = l.id else {
                skipped += 1;
                return None;
            };
            Some(vec![
                company.into(),
                id.into(),
                l.name.into(),
                l.time_zone.into(),
                l.rosterable.into(),
                l.parent_id.into(),
            ])
        })
        .collect();
    writer.write(sink, rows).await?;
    let warnings = without_id(skipped, outcome.warnings);
    let (figures, writer) = figures(writer, warnings);
    writer.close(sink).await?;
    Ok(figures)
}

fn without_id(skipped: usize, mut warnings: Vec<String>) -> Vec<String> {
    if skipped > 0 {
        warnings.push(format!("{skipped} record(s) without an id were skipped"));
    }
    warnings
}

fn status_text(status: employees::EmployeeStatus) -> String {
    use employees::EmployeeStatus as S;
    match status {
        S::Active => "Active".into(),
        S::Terminated => "Terminated".into(),
        S::Onboarding => "Onboarding".into(),
        S::Invited => "Invited".into(),
        S::Other(other) => other,
    }
}

async fn load_employees(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    company: &str,
) -> anyhow::Result<LoadFigures> {
    let mut writer = Writer::open(sink, &EMPLOYEES, request.source_name, request.run_id).await?;
    writer
        .replace(
            sink,
            &Replace::All {
                scope: Some(company.to_owned()),
            },
        )
        .await?;
    // No status filter: terminated employees stay in the snapshot.
    let outcome = exec
        .execute::<Employees>(
            request.call,
            Service::Default,
            &ScopeHeader::Company(company.to_owned()),
            employees::Variables {},
        )
        .await
        .with_context(|| format!("fetching roubler.employees for company {company}"))?;
    writer.pages += 1;
    let mut skipped = 0;
    let rows: Vec<Row> = outcome
        .data
        .employees
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let Some(id) = e.id else {
                skipped += 1;
                return None;
            };
            let (mobile, email, birth) = match e.person {
                Some(p) => (p.mobile, p.email, p.date_of_birth),
                None => (None, None, None),
            };
            let (location_id, location_name) = e.location.map_or((None, None), |l| (l.id, l.name));
            let (position_id, position_name) = e.position.map_or((None, None), |p| (p.id, p.name));
            Some(vec![
                company.into(),
                id.into(),
                e.full_name.into(),
                e.work_email.into(),
                e.status.map(status_text).into(),
                e.rosterable.into(),
                e.visible.into(),
                mobile.into(),
                email.into(),
                birth.into(),
                location_id.into(),
                location_name.into(),
                position_id.into(),
                position_name.into(),
                e.start_date.into(),
                e.terminated_at.into(),
                e.modified_at.into(),
            ])
        })
        .collect();
    writer.write(sink, rows).await?;
    let (figures, writer) = figures(writer, without_id(skipped, outcome.warnings));
    writer.close(sink).await?;
    Ok(figures)
}

async fn load_sales(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    place: &Place<'_>,
    window: crate::datasets::Window,
) -> anyhow::Result<LoadFigures> {
    // The window names dates; the location is asked for its own local midnights of those dates,
    // so each answered `day` is one of them whatever the zone's offset or DST state.
    let (first, last) = window.dates();
    let (start, end) = local_day_range(place.time_zone, &window);
    let mut writer = Writer::open(sink, &LOCATION_SALES, request.source_name, request.run_id).await?;
    writer
        .replace(
            sink,
            &Replace::Dates {
                scope: Some(place.id.to_owned()),
                first,
                last,
            },
        )
        .await?;
    let outcome = exec
        .execute::<LocationSales>(
            request.call,
            Service::Default,
            &ScopeHeader::Location(place.id.to_owned()),
            location_sales::Variables {
                start_time: start,
                end_time: end,
            },
        )
        .await
        .with_context(|| {
            format!(
                "fetching roubler.location_sales for location {} ({first} to {last})",
                place.id
            )
        })?;
    writer.pages += 1;
    let mut warnings = outcome.warnings;
    let mut outside = 0;
    let mut undated = 0;
    let zone = place.time_zone.name();
    let rows: Vec<Row> = outcome
        .data
        .location_sales
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let Some(day) = s.day else {
                undated += 1;
                return None;
            };
            if day < first || day >= last {
                // A day outside the replaced range would survive the next reload of its own
                // window twice over; keep the table's days exactly the window's.
                outside += 1;
                return None;
            }
            Some(vec![
                place.id.into(),
                day.into(),
                place.company.into(),
                zone.into(),
                s.forecast.into(),
                s.actual.into(),
                s.hours.into(),
                s.cost.into(),
            ])
        })
        .collect();
    writer.write(sink, rows).await?;
    if undated > 0 {
        warnings.push(format!("{undated} sales row(s) without a day were skipped"));
    }
    if outside > 0 {
        warnings.push(format!(
            "{outside} sales row(s) for days outside {first}..{last} were skipped"
        ));
    }
    let (figures, writer) = figures(writer, warnings);
    writer.close(sink).await?;
    Ok(figures)
}

/// A break list as JSON, in the vendor's field names, timestamps as the vendor writes them. A
/// shift's breaks have no documented `id`: `None` leaves the key out rather than storing null.
fn breaks_json(
    breaks: impl IntoIterator<Item = (Option<String>, Option<DateTime>, Option<DateTime>, Option<bool>)>,
) -> Value {
    Value::Array(
        breaks
            .into_iter()
            .map(|(id, start, end, subtracts)| {
                let mut entry = json!({
                    "startTime": start.as_ref().map(instant_text),
                    "endTime": end.as_ref().map(instant_text),
                    "subtracts": subtracts,
                });
                if let (Some(id), Some(object)) = (id, entry.as_object_mut()) {
                    object.insert("id".into(), Value::String(id));
                }
                entry
            })
            .collect(),
    )
}

async fn load_timesheets(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    place: &Place<'_>,
    window: crate::datasets::Window,
) -> anyhow::Result<LoadFigures> {
    let mut writer = Writer::open(sink, &TIMESHEETS, request.source_name, request.run_id).await?;
    writer
        .replace(
            sink,
            &Replace::Instants {
                scope: Some(place.id.to_owned()),
                start: window.start,
                end: window.end,
            },
        )
        .await?;
    let outcome = exec
        .execute::<Timesheets>(
            request.call,
            Service::Default,
            &ScopeHeader::Company(place.company.to_owned()),
            timesheets::Variables {
                start_time: window.start,
                end_time: window.end,
                location_id: place.id.to_owned(),
            },
        )
        .await
        .with_context(|| {
            format!(
                "fetching roubler.timesheets for location {} in {window}",
                place.id
            )
        })?;
    writer.pages += 1;
    let mut skipped = 0;
    let rows: Vec<Row> = outcome
        .data
        .timesheets
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let (Some(id), Some(start)) = (t.id, t.start_time) else {
                skipped += 1;
                return None;
            };
            let (work_id, work_name, work_from) = t
                .work_type
                .map_or((None, None, None), |w| (w.id, w.name, w.applied_from_id));
            let breaks = t.breaks.map(|b| {
                breaks_json(
                    b.into_iter()
                        .flatten()
                        .map(|b| (b.id, b.start_time, b.end_time, b.subtracts)),
                )
            });
            let (employee_id, employee_name) = t.employee.map_or((None, None), |e| (e.id, e.full_name));
            let (position_id, position_text) = t.position.map_or((None, None), |p| (p.id, p.text));
            let (location_name, location_zone) = t.location.map_or((None, None), |l| (l.name, l.timezone));
            Some(vec![
                place.id.into(),
                id.into(),
                place.company.into(),
                start.into(),
                t.end_time.into(),
                t.status.into(),
                t.hours.into(),
                t.cost.into(),
                t.variance.into(),
                work_id.into(),
                work_name.into(),
                work_from.into(),
                breaks.into(),
                employee_id.into(),
                employee_name.into(),
                position_id.into(),
                position_text.into(),
                location_name.into(),
                location_zone.into(),
            ])
        })
        .collect();
    writer.write(sink, rows).await?;
    let (figures, writer) = figures(writer, without_id(skipped, outcome.warnings));
    writer.close(sink).await?;
    Ok(figures)
}

async fn load_shifts(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    place: &Place<'_>,
    window: crate::datasets::Window,
) -> anyhow::Result<LoadFigures> {
    let mut writer = Writer::open(sink, &SHIFTS, request.source_name, request.run_id).await?;
    writer
        .replace(
            sink,
            &Replace::Instants {
                scope: Some(place.id.to_owned()),
                start: window.start,
                end: window.end,
            },
        )
        .await?;
    // `published` left out: rostered shifts are wanted whether published or not.
    let outcome = exec
        .execute::<Shifts>(
            request.call,
            Service::Default,
            &ScopeHeader::Company(place.company.to_owned()),
            shifts::Variables {
                start_time: window.start,
                end_time: window.end,
                location_id: place.id.to_owned(),
            },
        )
        .await
        .with_context(|| format!("fetching roubler.shifts for location {} in {window}", place.id))?;
    writer.pages += 1;
    let mut skipped = 0;
    let rows: Vec<Row> = outcome
        .data
        .shifts
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let (Some(id), Some(start)) = (s.id, s.start_time) else {
                skipped += 1;
                return None;
            };
            let breaks = s.breaks.map(|b| {
                breaks_json(
                    b.into_iter()
                        .flatten()
                        .map(|b| (None, b.start_time, b.end_time, b.subtracts)),
                )
            });
            let (employee_id, employee_name) = s.employee.map_or((None, None), |e| (e.id, e.full_name));
            let (position_id, position_text) = s.position.map_or((None, None), |p| (p.id, p.text));
            Some(vec![
                place.id.into(),
                id.into(),
                place.company.into(),
                start.into(),
                s.end_time.into(),
                s.published.into(),
                s.hours.into(),
                breaks.into(),
                employee_id.into(),
                employee_name.into(),
                position_id.into(),
                position_text.into(),
                s.location.and_then(|l| l.name).into(),
            ])
        })
        .collect();
    writer.write(sink, rows).await?;
    let (figures, writer) = figures(writer, without_id(skipped, outcome.warnings));
    writer.close(sink).await?;
    Ok(figures)
}
