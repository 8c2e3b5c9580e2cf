//! Roubler's GraphQL schema: the object types (field names and types follow
//! `schemas/roubler.graphql` (see `docs/vendors/roubler.md`, "Queries"), itself rebuilt from the developer.roubler.com
//! examples) and the `Query` root whose resolvers read the generated world.
//!
//! Every field is nullable, as in `schemas/roubler.graphql`: the real nullability is unknown, and a nullable
//! schema forces the service's generated client to cope with nulls. The types also derive serde
//! with the same field names, so the handle's expected-data accessors return exactly the JSON a
//! query selecting every field would get.

use std::sync::Arc;

use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Enum, ErrorExtensions, ID, Object, Schema, SimpleObject,
};
use serde::{Deserialize, Serialize};

use super::model::World;
use crate::gql::{GqlDate, GqlDateTime};

pub type RoublerSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Builds the schema; `world` is `None` only when printing the SDL. `removed` fields are left out
/// of introspection and refused in queries, `retyped` ones change type (see [`crate::drift`]).
pub fn build(
    world: Option<Arc<World>>,
    removed: &[crate::drift::RemovedField],
    retyped: &[crate::drift::RetypedField],
) -> RoublerSchema {
    let builder = Schema::build(Query, EmptyMutation, EmptySubscription);
    let builder = crate::drift::apply(builder, removed, retyped);
    match world {
        Some(world) => builder.data(world).finish(),
        None => builder.finish(),
    }
}

/// The scoping headers of one request (`X-Company-ID`, `X-Location-ID`), as sent.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub company_id: Option<String>,
    pub location_id: Option<String>,
}

/// A GraphQL error carrying Roubler's non-standard top-level `name` (moved out of `extensions`
/// when the response is written, see `super::hoist_error_names`).
pub(crate) fn error(name: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("name", name))
}

/// A nullable list of nullable items, the schema's `[T]`.
pub(crate) type List<T> = Option<Vec<Option<T>>>;

pub(crate) fn list<T>(items: impl IntoIterator<Item = T>) -> List<T> {
    Some(items.into_iter().map(Some).collect())
}

/// Employment status. The values are those seen in Roubler's examples; there may be more.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[graphql(rename_items = "PascalCase")]
pub enum EmployeeStatus {
    Active,
    Terminated,
    Onboarding,
    Invited,
}

/// The API user and the employee records (company and location contexts) it can reach.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Viewer {
    pub user: Option<User>,
    /// One entry per company/location context the API user can access.
    pub employees: List<ViewerEmployee>,
}

/// The API user account.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Option<ID>,
    pub full_name: Option<String>,
    pub email: Option<String>,
}

/// A company/location context of the API user.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewerEmployee {
    pub company: Option<Company>,
    pub location: Option<LocationRef>,
}

/// A company (tenant); its id goes into the `X-Company-ID` header.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    pub id: Option<ID>,
    pub name: Option<String>,
}

/// A location of the company. Locations form a tree: `parentId` is "0" for the root.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    pub id: Option<ID>,
    pub name: Option<String>,
    /// IANA time zone name, e.g. "Australia/Brisbane".
    pub time_zone: Option<String>,
    pub rosterable: Option<bool>,
    /// Id of the parent location; "0" for the root.
    pub parent_id: Option<ID>,
}

/// A reference to a location.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationRef {
    pub id: Option<ID>,
    pub name: Option<String>,
}

/// A reference to a location with its time zone (note the lowercase `timezone`).
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationTz {
    pub id: Option<ID>,
    pub name: Option<String>,
    /// IANA time zone name.
    pub timezone: Option<String>,
}

/// Sales of one location on one local day.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationSalesDay {
    /// The calendar day in the location's own time zone.
    pub day: Option<GqlDate>,
    /// Forecast sales (minor currency units).
    pub forecast: Option<f64>,
    /// Actual sales (minor currency units).
    pub actual: Option<f64>,
    /// Labour hours worked.
    pub hours: Option<f64>,
    /// Labour cost (minor currency units).
    pub cost: Option<f64>,
}

/// An employee of the company, terminated ones included.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Employee {
    pub id: Option<ID>,
    pub full_name: Option<String>,
    pub work_email: Option<String>,
    pub status: Option<EmployeeStatus>,
    pub rosterable: Option<bool>,
    pub visible: Option<bool>,
    pub person: Option<Person>,
    /// The employee's home location.
    pub location: Option<LocationRef>,
    pub position: Option<PositionRef>,
    pub start_date: Option<GqlDate>,
    /// Set once the employee has left.
    pub terminated_at: Option<GqlDateTime>,
    pub modified_at: Option<GqlDateTime>,
}

/// Personal details of an employee.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub mobile: Option<String>,
    pub email: Option<String>,
    pub date_of_birth: Option<GqlDate>,
}

/// A position (role) by name.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionRef {
    pub id: Option<ID>,
    pub name: Option<String>,
}

/// A position (role) as timesheets and shifts show it.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionText {
    pub id: Option<ID>,
    pub text: Option<String>,
}

/// A reference to an employee.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmployeeRef {
    pub id: Option<ID>,
    pub full_name: Option<String>,
}

/// The kind of work a timesheet records (ordinary hours, overtime, ...).
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkType {
    pub id: Option<ID>,
    pub name: Option<String>,
    /// The work type this one was derived from, if any.
    pub applied_from_id: Option<ID>,
}

/// A break within a timesheet.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Break {
    pub id: Option<ID>,
    pub start_time: Option<GqlDateTime>,
    pub end_time: Option<GqlDateTime>,
    /// True when the break is unpaid (subtracted from the hours).
    pub subtracts: Option<bool>,
}

/// A break within a rostered shift. Roubler's shifts page documents `startTime endTime
/// subtracts` only (a timesheet's break also has an `id`), so a query asking a shift break for
/// its `id` is refused, as an API following its docs would.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShiftBreak {
    pub start_time: Option<GqlDateTime>,
    pub end_time: Option<GqlDateTime>,
    /// True when the break is unpaid (subtracted from the hours).
    pub subtracts: Option<bool>,
}

impl From<Break> for ShiftBreak {
    fn from(b: Break) -> Self {
        ShiftBreak {
            start_time: b.start_time,
            end_time: b.end_time,
            subtracts: b.subtracts,
        }
    }
}

/// Time actually worked by one employee at one location.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timesheet {
    pub id: Option<ID>,
    pub start_time: Option<GqlDateTime>,
    pub end_time: Option<GqlDateTime>,
    /// e.g. "approved", "pending", "rejected".
    pub status: Option<String>,
    pub hours: Option<f64>,
    pub cost: Option<f64>,
    /// Worked hours minus rostered hours.
    pub variance: Option<f64>,
    pub work_type: Option<WorkType>,
    pub breaks: List<Break>,
    pub employee: Option<EmployeeRef>,
    pub position: Option<PositionText>,
    pub location: Option<LocationTz>,
}

/// A rostered shift.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shift {
    pub id: Option<ID>,
    pub start_time: Option<GqlDateTime>,
    pub end_time: Option<GqlDateTime>,
    pub breaks: List<ShiftBreak>,
    pub published: Option<bool>,
    pub hours: Option<f64>,
    pub employee: Option<EmployeeRef>,
    pub position: Option<PositionText>,
    pub location: Option<LocationRef>,
}

/// A kind of leave.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveType {
    pub id: Option<ID>,
    pub name: Option<String>,
}

/// An employee's balance of one kind of leave.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveBalance {
    pub leave_type: Option<LeaveType>,
    pub balance: Option<f64>,
    /// Unit of `balance`, e.g. "hours".
    pub unit: Option<String>,
}

/// A request for leave.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveRequest {
    pub id: Option<ID>,
    pub employee: Option<EmployeeRef>,
    pub leave_type: Option<LeaveType>,
    pub start_time: Option<GqlDateTime>,
    pub end_time: Option<GqlDateTime>,
    pub approved: Option<bool>,
    pub hours: Option<f64>,
}

/// A cost centre that labour cost is booked against.
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostCentre {
    pub id: Option<ID>,
    pub name: Option<String>,
    pub code: Option<String>,
    pub archived: Option<bool>,
}

/// A pay rule (award interpretation rule).
#[derive(SimpleObject, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayRule {
    pub id: Option<ID>,
    pub name: Option<String>,
}

/// Roubler's read-only queries. Every query except `viewer` needs the `X-Company-ID` header;
/// `locationSales` needs `X-Location-ID` instead (it has no `locationId` argument).
pub struct Query;

fn world<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<World>> {
    ctx.data::<Arc<World>>()
}

fn scope<'a>(ctx: &Context<'a>) -> Scope {
    ctx.data_opt::<Scope>().cloned().unwrap_or_default()
}

#[Object]
impl Query {
    /// The API user and the companies and locations it can access.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Viewer>> {
        Ok(Some(world(ctx)?.viewer()))
    }

    /// Every location of the company (a tree; the root has parentId "0").
    async fn locations(&self, ctx: &Context<'_>) -> async_graphql::Result<List<Location>> {
        let world = world(ctx)?;
        let company = world.company_scope(&scope(ctx))?;
        Ok(list(world.locations(&company.id)))
    }

    /// Employees of the company, terminated ones included; every filter is optional.
    async fn employees(
        &self,
        ctx: &Context<'_>,
        statuses: Option<Vec<EmployeeStatus>>,
        rosterable: Option<bool>,
        visible: Option<bool>,
    ) -> async_graphql::Result<List<Employee>> {
        let world = world(ctx)?;
        let company = world.company_scope(&scope(ctx))?;
        let employees = world.employees(&company.id).into_iter().filter(|e| {
            statuses
                .as_ref()
                .is_none_or(|s| e.status.is_some_and(|st| s.contains(&st)))
                && rosterable.is_none_or(|r| e.rosterable == Some(r))
                && visible.is_none_or(|v| e.visible == Some(v))
        });
        Ok(list(employees))
    }

    /// Daily sales of the location named by the `X-Location-ID` header: one row per local day
    /// whose local midnight lies in [startTime, endTime).
    async fn location_sales(
        &self,
        ctx: &Context<'_>,
        start_time: GqlDateTime,
        end_time: GqlDateTime,
    ) -> async_graphql::Result<List<LocationSalesDay>> {
        let world = world(ctx)?;
        let location = world.location_scope(&scope(ctx))?;
        Ok(list(world.location_sales(&location.id, start_time.0, end_time.0)))
    }

    /// Timesheets of a location whose startTime lies in [startTime, endTime).
    async fn timesheets(
        &self,
        ctx: &Context<'_>,
        start_time: GqlDateTime,
        end_time: GqlDateTime,
        location_id: ID,
    ) -> async_graphql::Result<List<Timesheet>> {
        let world = world(ctx)?;
        let company = world.company_scope(&scope(ctx))?;
        let location = world.location_in(company, &location_id)?;
        Ok(list(world.timesheets(&location.id, start_time.0, end_time.0)))
    }

    /// Shifts of a location whose startTime lies in [startTime, endTime).
    async fn shifts(
        &self,
        ctx: &Context<'_>,
        start_time: GqlDateTime,
        end_time: GqlDateTime,
        location_id: ID,
        published: Option<bool>,
    ) -> async_graphql::Result<List<Shift>> {
        let world = world(ctx)?;
        let company = world.company_scope(&scope(ctx))?;
        let location = world.location_in(company, &location_id)?;
        let shifts = world
            .shifts(&location.id, start_time.0, end_time.0)
            .into_iter()
            .filter(|s| published.is_none_or(|p| s.published == Some(p)));
        Ok(list(shifts))
    }

    /// Leave balances of one employee.
    async fn leave_balance(
        &self,
        ctx: &Context<'_>,
        employee_id: ID,
        as_of: Option<GqlDate>,
    ) -> async_graphql::Result<List<LeaveBalance>> {
        let world = world(ctx)?;
        let company = world.company_scope(&scope(ctx))?;
        let _ = as_of;
        world
            .leave_balance(&company.id, &employee_id)
            .map(list)
            .ok_or_else(|| {
                error(
                    "NotFound",
                    format!("Employee {} not found.", employee_id.as_str()),
                )
            })
    }

    /// Leave requests of the company. Without strictRange a request overlapping the window is
    /// returned; with it, only requests entirely inside it.
    async fn leave_requests(
        &self,
        ctx: &Context<'_>,
        start_time: Option<GqlDateTime>,
        end_time: Option<GqlDateTime>,
        approved: Option<bool>,
        leave_type_id: Option<String>,
        strict_range: Option<bool>,
    ) -> async_graphql::Result<List<LeaveRequest>> {
        let world = world(ctx)?;
        let company = world.company_scope(&scope(ctx))?;
        let strict = strict_range.unwrap_or(false);
        let requests = world.leave_requests(&company.id).into_iter().filter(|r| {
            let (Some(start), Some(end)) = (r.start_time, r.end_time) else {
                return false;
            };
            let after = start_time.is_none_or(|s| if strict { start.0 >= s.0 } else { end.0 > s.0 });
            let before = end_time.is_none_or(|e| if strict { end.0 <= e.0 } else { start.0 < e.0 });
            let kind = leave_type_id.as_ref().is_none_or(|id| {
                r.leave_type
                    .as_ref()
                    .and_then(|t| t.id.as_ref())
                    .map(|t| t.as_str())
                    == Some(id)
            });
            after && before && kind && approved.is_none_or(|a| r.approved == Some(a))
        });
        Ok(list(requests))
    }

    /// Cost centres of the company; archived ones only when asked for.
    async fn cost_centres(
        &self,
        ctx: &Context<'_>,
        show_archived: bool,
    ) -> async_graphql::Result<List<CostCentre>> {
        let world = world(ctx)?;
        let company = world.company_scope(&scope(ctx))?;
        let centres = world
            .cost_centres(&company.id)
            .into_iter()
            .filter(|c| show_archived || c.archived != Some(true));
        Ok(list(centres))
    }

    /// Pay rules of the company.
    async fn pay_rules(&self, ctx: &Context<'_>) -> async_graphql::Result<List<PayRule>> {
        let world = world(ctx)?;
        let company = world.company_scope(&scope(ctx))?;
        Ok(list(world.pay_rules(&company.id)))
    }
}
