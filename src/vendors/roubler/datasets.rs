//! Roubler: company snapshots (`locations`, `employees`) and per-location time windows
//! (`location_sales` by local day, `timesheets` and `shifts` by start time), plus scope discovery
//! (`viewer` → companies, `locations` → locations with their time zones).
//!
//! Roubler has no paging: every query answers a plain list, so one window is one call and the
//! windows themselves are kept small (see [`super::window`]).

use anyhow::Context;
use chrono::NaiveDate;
use graphql_client::GraphQLQuery;
use serde_json::{Value, json};

use chrono::TimeDelta;

use crate::catalog::{Dataset, DatasetInfo, WindowPolicy};
use crate::datasets::instant::Instant;
use crate::datasets::rows::{TableRow, instant_text, table_row};
use crate::datasets::sink::{Replace, Sink, TableSpec, Writer};
use crate::datasets::window::local_day_range;
use crate::datasets::{LoadFigures, LoadRequest, ScopeTarget};
use super::super::{CompiledQuery, compiled};
use crate::executor::{CallContext, Executor, ScopeHeader, Service};
use crate::failure::Failure;

/// The scalars as the generated code sees them.
type DateTime = Instant;
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

/// Every query a drift check walks (the derives above include the same files; a unit test keeps this list and `queries/` in step).
pub(super) const QUERIES: &[CompiledQuery] = &[
    compiled!(Service::DEFAULT, "queries/roubler/viewer.graphql"),
    compiled!(Service::DEFAULT, "queries/roubler/locations.graphql"),
    compiled!(Service::DEFAULT, "queries/roubler/employees.graphql"),
    compiled!(Service::DEFAULT, "queries/roubler/location_sales.graphql"),
    compiled!(Service::DEFAULT, "queries/roubler/timesheets.graphql"),
    compiled!(Service::DEFAULT, "queries/roubler/shifts.graphql"),
];

table_row! {
    /// A location of a company (`roubler.locations`), from the company's snapshot.
    pub struct LocationRow<'a> in "roubler.locations" {
        key: [company_id, location_id],
        scope: company_id,
        columns: {
            company_id: &'a str,
            location_id: String,
            name: Option<String>,
            time_zone: Option<String>,
            rosterable: Option<bool>,
            parent_id: Option<String>,
        }
    }
}

table_row! {
    /// An employee of a company (`roubler.employees`), terminated ones included.
    pub struct EmployeeRow<'a> in "roubler.employees" {
        key: [company_id, employee_id],
        scope: company_id,
        columns: {
            company_id: &'a str,
            employee_id: String,
            full_name: Option<String>,
            work_email: Option<String>,
            status: Option<String>,
            rosterable: Option<bool>,
            visible: Option<bool>,
            person_mobile: Option<String>,
            person_email: Option<String>,
            person_date_of_birth: Option<Date>,
            location_id: Option<String>,
            location_name: Option<String>,
            position_id: Option<String>,
            position_name: Option<String>,
            start_date: Option<Date>,
            terminated_at: Option<DateTime>,
            modified_at: Option<DateTime>,
        }
    }
}

table_row! {
    /// One local day of a location's sales (`roubler.location_sales`).
    pub struct LocationSalesRow<'a> in "roubler.location_sales" {
        key: [location_id, day],
        scope: location_id,
        window: day,
        columns: {
            location_id: &'a str,
            day: Date,
            company_id: &'a str,
            time_zone: &'a str,
            forecast: Option<f64>,
            actual: Option<f64>,
            hours: Option<f64>,
            cost: Option<f64>,
        }
    }
}

table_row! {
    /// A timesheet of a location (`roubler.timesheets`), filed under its start time.
    pub struct TimesheetRow<'a> in "roubler.timesheets" {
        key: [location_id, timesheet_id],
        scope: location_id,
        window: start_time,
        columns: {
            location_id: &'a str,
            timesheet_id: String,
            company_id: &'a str,
            start_time: DateTime,
            end_time: Option<DateTime>,
            status: Option<String>,
            hours: Option<f64>,
            cost: Option<f64>,
            variance: Option<f64>,
            work_type_id: Option<String>,
            work_type_name: Option<String>,
            work_type_applied_from_id: Option<String>,
            breaks: Option<Value>,
            employee_id: Option<String>,
            employee_name: Option<String>,
            position_id: Option<String>,
            position_text: Option<String>,
            location_name: Option<String>,
            location_time_zone: Option<String>,
        }
    }
}

table_row! {
    /// A rostered shift of a location (`roubler.shifts`), filed under its start time.
    pub struct ShiftRow<'a> in "roubler.shifts" {
        key: [location_id, shift_id],
        scope: location_id,
        window: start_time,
        columns: {
            location_id: &'a str,
            shift_id: String,
            company_id: &'a str,
            start_time: DateTime,
            end_time: Option<DateTime>,
            published: Option<bool>,
            hours: Option<f64>,
            breaks: Option<Value>,
            employee_id: Option<String>,
            employee_name: Option<String>,
            position_id: Option<String>,
            position_text: Option<String>,
            location_name: Option<String>,
        }
    }
}

/// Roubler documents no limit; a week per call keeps timesheet and shift answers small
/// (`docs/vendors/roubler.md`).
const WORK_SPAN: TimeDelta = TimeDelta::days(7);
/// Daily sales: one row per day and location, so a month per call is small.
const SALES_SPAN: TimeDelta = TimeDelta::days(31);

/// Locations (a tree) with their IANA time zones.
pub const LOCATIONS: Dataset = Dataset::new(&DatasetInfo::new(
    super::KIND,
    "locations",
    "roubler.locations",
    WindowPolicy::Snapshot,
));
/// Employees, terminated ones included.
pub const EMPLOYEES: Dataset = Dataset::new(&DatasetInfo::new(
    super::KIND,
    "employees",
    "roubler.employees",
    WindowPolicy::Snapshot,
));
/// Daily sales per location (local days).
pub const LOCATION_SALES: Dataset = Dataset::new(&DatasetInfo {
    max_span: Some(SALES_SPAN),
    daily: true,
    ..DatasetInfo::new(
        super::KIND,
        "location_sales",
        "roubler.location_sales",
        WindowPolicy::Incremental,
    )
});
/// Timesheets per location.
pub const TIMESHEETS: Dataset = Dataset::new(&DatasetInfo {
    max_span: Some(WORK_SPAN),
    ..DatasetInfo::new(
        super::KIND,
        "timesheets",
        "roubler.timesheets",
        WindowPolicy::Incremental,
    )
});
/// Rostered shifts per location.
pub const SHIFTS: Dataset = Dataset::new(&DatasetInfo {
    max_span: Some(WORK_SPAN),
    ..DatasetInfo::new(super::KIND, "shifts", "roubler.shifts", WindowPolicy::Incremental)
});

/// Roubler's datasets, in the order the README lists them.
pub const DATASETS: &[Dataset] = &[LOCATIONS, EMPLOYEES, LOCATION_SALES, TIMESHEETS, SHIFTS];

pub(crate) fn table(dataset: Dataset) -> Option<&'static TableSpec> {
    Some(match dataset {
        LOCATIONS => LocationRow::spec(),
        EMPLOYEES => EmployeeRow::spec(),
        LOCATION_SALES => LocationSalesRow::spec(),
        TIMESHEETS => TimesheetRow::spec(),
        SHIFTS => ShiftRow::spec(),
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
        .execute::<Viewer>(call, Service::DEFAULT, &ScopeHeader::None, viewer::Variables {})
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
            Service::DEFAULT,
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
    match (request.dataset.id(), request.scope) {
        (LOCATIONS, ScopeTarget::Company(company)) => load_locations(exec, sink, request, company).await,
        (EMPLOYEES, ScopeTarget::Company(company)) => load_employees(exec, sink, request, company).await,
        (
            LOCATION_SALES | TIMESHEETS | SHIFTS,
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
            match request.dataset.id() {
                LOCATION_SALES => load_sales(exec, sink, request, &location, window).await,
                TIMESHEETS => load_timesheets(exec, sink, request, &location, window).await,
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

/// What every Roubler load shares: one unpaged query whose answer replaces `replace` in `R`'s
/// table. `rows` makes the rows of the answer and adds a warning for whatever it skips, or fails
/// the window (an answer that cannot be this scope's, see [`same_location`]).
#[allow(clippy::too_many_arguments)]
async fn load_one_call<Q: GraphQLQuery, R: TableRow>(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    replace: Replace,
    scope: ScopeHeader,
    variables: Q::Variables,
    what: String,
    rows: impl FnOnce(Q::ResponseData, &mut Vec<String>) -> anyhow::Result<Vec<R>>,
) -> anyhow::Result<LoadFigures> {
    let mut writer = Writer::open(sink, R::spec(), request.source_name, request.run_id).await?;
    writer.replace(sink, &replace).await?;
    let outcome = exec
        .execute::<Q>(request.call, Service::DEFAULT, &scope, variables)
        .await
        .with_context(|| what.clone())?;
    let what_again = what;
    writer.pages += 1;
    let mut warnings = outcome.warnings;
    let rows = rows(outcome.data, &mut warnings).with_context(|| what_again)?;
    writer.write(sink, rows).await?;
    writer.finish(sink, warnings).await
}

/// Fails when a record names a location other than the one asked for: such an answer belongs
/// to another scope, and storing it would replace this location's rows with another's.
fn same_location<'a>(asked: &str, named: impl Iterator<Item = &'a str>) -> anyhow::Result<()> {
    for id in named {
        if id.trim() != asked {
            let shown: String = id.chars().take(64).collect();
            return Err(Failure::invalid_answer(format!(
                "the answer holds records of location {shown}, not {asked}; nothing of it is kept"
            ))
            .into());
        }
    }
    Ok(())
}

/// The rows `row` makes of `records`; a record it returns `None` for has no id (or no start) and
/// is counted in a warning.
fn identified<T, R>(
    records: Option<Vec<Option<T>>>,
    warnings: &mut Vec<String>,
    row: impl FnMut(T) -> Option<R>,
) -> Vec<R> {
    let records: Vec<T> = records.unwrap_or_default().into_iter().flatten().collect();
    let read = records.len();
    let rows: Vec<R> = records.into_iter().filter_map(row).collect();
    let skipped = read - rows.len();
    if skipped > 0 {
        warnings.push(format!("{skipped} record(s) without an id were skipped"));
    }
    rows
}

async fn load_locations(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    company: &str,
) -> anyhow::Result<LoadFigures> {
    load_one_call::<Locations, _>(
        exec,
        sink,
        request,
        Replace::All {
            scope: Some(company.to_owned()),
        },
        ScopeHeader::Company(company.to_owned()),
        locations::Variables {},
        format!("fetching roubler.locations for company {company}"),
        |data, warnings| {
            Ok(identified(data.locations, warnings, |l| {
                Some(LocationRow {
                    company_id: company,
                    location_id: l.id?,
                    name: l.name,
                    time_zone: l.time_zone,
                    rosterable: l.rosterable,
                    parent_id: l.parent_id,
                })
            }))
        },
    )
    .await
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
    // No status filter: terminated employees stay in the snapshot.
    load_one_call::<Employees, _>(
        exec,
        sink,
        request,
        Replace::All {
            scope: Some(company.to_owned()),
        },
        ScopeHeader::Company(company.to_owned()),
        employees::Variables {},
        format!("fetching roubler.employees for company {company}"),
        |data, warnings| {
            Ok(identified(data.employees, warnings, |e| {
                let id = e.id?;
                let (mobile, email, birth) = match e.person {
                    Some(p) => (p.mobile, p.email, p.date_of_birth),
                    None => (None, None, None),
                };
                let (location_id, location_name) = e.location.map_or((None, None), |l| (l.id, l.name));
                let (position_id, position_name) = e.position.map_or((None, None), |p| (p.id, p.name));
                Some(EmployeeRow {
                    company_id: company,
                    employee_id: id,
                    full_name: e.full_name,
                    work_email: e.work_email,
                    status: e.status.map(status_text),
                    rosterable: e.rosterable,
                    visible: e.visible,
                    person_mobile: mobile,
                    person_email: email,
                    person_date_of_birth: birth,
                    location_id,
                    location_name,
                    position_id,
                    position_name,
                    start_date: e.start_date,
                    terminated_at: e.terminated_at,
                    modified_at: e.modified_at,
                })
            }))
        },
    )
    .await
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
    let zone = place.time_zone.name();
    load_one_call::<LocationSales, _>(
        exec,
        sink,
        request,
        Replace::Dates {
            scope: Some(place.id.to_owned()),
            first,
            last,
        },
        ScopeHeader::Location(place.id.to_owned()),
        location_sales::Variables {
            start_time: start.into(),
            end_time: end.into(),
        },
        format!(
            "fetching roubler.location_sales for location {} ({first} to {last})",
            place.id
        ),
        |data, warnings| {
            let (mut outside, mut undated) = (0, 0);
            let rows: Vec<LocationSalesRow> = data
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
                    Some(LocationSalesRow {
                        location_id: place.id,
                        day,
                        company_id: place.company,
                        time_zone: zone,
                        forecast: s.forecast,
                        actual: s.actual,
                        hours: s.hours,
                        cost: s.cost,
                    })
                })
                .collect();
            if undated > 0 {
                warnings.push(format!("{undated} sales row(s) without a day were skipped"));
            }
            if outside > 0 {
                warnings.push(format!(
                    "{outside} sales row(s) for days outside {first}..{last} were skipped"
                ));
            }
            Ok(rows)
        },
    )
    .await
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
                    "startTime": start.as_deref().map(instant_text),
                    "endTime": end.as_deref().map(instant_text),
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
    load_one_call::<Timesheets, _>(
        exec,
        sink,
        request,
        Replace::Instants {
            scope: Some(place.id.to_owned()),
            start: window.start,
            end: window.end,
        },
        ScopeHeader::Company(place.company.to_owned()),
        timesheets::Variables {
            start_time: window.start.into(),
            end_time: window.end.into(),
            location_id: place.id.to_owned(),
        },
        format!(
            "fetching roubler.timesheets for location {} in {window}",
            place.id
        ),
        |data, warnings| {
            let locations = data.timesheets.iter().flatten().flatten();
            same_location(
                place.id,
                locations.filter_map(|t| t.location.as_ref()?.id.as_deref()),
            )?;
            Ok(identified(data.timesheets, warnings, |t| {
                let (id, start) = (t.id?, t.start_time?);
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
                let (location_name, location_zone) =
                    t.location.map_or((None, None), |l| (l.name, l.timezone));
                Some(TimesheetRow {
                    location_id: place.id,
                    timesheet_id: id,
                    company_id: place.company,
                    start_time: start,
                    end_time: t.end_time,
                    status: t.status,
                    hours: t.hours,
                    cost: t.cost,
                    variance: t.variance,
                    work_type_id: work_id,
                    work_type_name: work_name,
                    work_type_applied_from_id: work_from,
                    breaks,
                    employee_id,
                    employee_name,
                    position_id,
                    position_text,
                    location_name,
                    location_time_zone: location_zone,
                })
            }))
        },
    )
    .await
}

async fn load_shifts(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    place: &Place<'_>,
    window: crate::datasets::Window,
) -> anyhow::Result<LoadFigures> {
    // `published` left out: rostered shifts are wanted whether published or not.
    load_one_call::<Shifts, _>(
        exec,
        sink,
        request,
        Replace::Instants {
            scope: Some(place.id.to_owned()),
            start: window.start,
            end: window.end,
        },
        ScopeHeader::Company(place.company.to_owned()),
        shifts::Variables {
            start_time: window.start.into(),
            end_time: window.end.into(),
            location_id: place.id.to_owned(),
        },
        format!("fetching roubler.shifts for location {} in {window}", place.id),
        |data, warnings| {
            let locations = data.shifts.iter().flatten().flatten();
            same_location(
                place.id,
                locations.filter_map(|s| s.location.as_ref()?.id.as_deref()),
            )?;
            Ok(identified(data.shifts, warnings, |s| {
                let (id, start) = (s.id?, s.start_time?);
                let breaks = s.breaks.map(|b| {
                    breaks_json(
                        b.into_iter()
                            .flatten()
                            .map(|b| (None, b.start_time, b.end_time, b.subtracts)),
                    )
                });
                let (employee_id, employee_name) = s.employee.map_or((None, None), |e| (e.id, e.full_name));
                let (position_id, position_text) = s.position.map_or((None, None), |p| (p.id, p.text));
                Some(ShiftRow {
                    location_id: place.id,
                    shift_id: id,
                    company_id: place.company,
                    start_time: start,
                    end_time: s.end_time,
                    published: s.published,
                    hours: s.hours,
                    breaks,
                    employee_id,
                    employee_name,
                    position_id,
                    position_text,
                    location_name: s.location.and_then(|l| l.name),
                })
            }))
        },
    )
    .await
}
