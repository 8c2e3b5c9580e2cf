//! The generated Roubler world: companies, a location tree per company (each location in its own
//! IANA time zone), employees, and per location per *local* day the sales row, timesheets and
//! shifts.
//!
//! Companies, locations and employees are small and built once at start; daily records are a
//! pure function of `(seed, location, local day, n)` and built on demand for the days a window
//! touches. [`Edits`] are applied on every read, by record id (sales: `"<locationId>:<day>"`).

use async_graphql::ID;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::schema::{
    Break, Company, CostCentre, Employee, EmployeeRef, EmployeeStatus, LeaveBalance, LeaveRequest, LeaveType,
    Location, LocationRef, LocationSalesDay, LocationTz, PayRule, Person, PositionRef, PositionText, Scope,
    Shift, ShiftBreak, Timesheet, User, Viewer, ViewerEmployee, error, list,
};
use crate::data::{Edits, rng_for};
use crate::gql::{GqlDate, GqlDateTime};

const COMPANY_NAMES: &[(&str, &str)] = &[
    ("Acme Corporation", "acme.example"),
    ("Harbour Hospitality Group", "harbourhospitality.example"),
    ("Alpenblick Gastro GmbH", "alpenblick.example"),
    ("Southern Cross Cafes", "southerncross.example"),
];
const LOCATION_NAMES: &[&str] = &[
    "Head Office",
    "Bondi Beach",
    "Kreuzberg",
    "South Bank",
    "Surry Hills",
    "Prenzlauer Berg",
    "Fortitude Valley",
    "Newtown",
    "Mitte",
];
const FIRST_NAMES: &[&str] = &[
    "Olivia",
    "Noah",
    "Charlotte",
    "Jack",
    "Amelia",
    "William",
    "Mia",
    "Lukas",
    "Sophie",
    "Leon",
    "Chloe",
    "Henry",
    "Isla",
    "Oscar",
    "Grace",
    "Felix",
    "Emma",
    "Hamish",
    "Ava",
    "Jonas",
];
const LAST_NAMES: &[&str] = &[
    "Smith", "Nguyen", "Williams", "Brown", "Müller", "Schmidt", "Wilson", "Taylor", "O'Brien", "Kelly",
    "Fischer", "Martin", "Anderson", "Thompson", "Weber", "Walker", "Lee", "Becker",
];
const POSITIONS: &[(&str, &str)] = &[
    ("501", "Barista"),
    ("502", "Chef"),
    ("503", "Kitchen Hand"),
    ("504", "Floor Staff"),
    ("505", "Supervisor"),
    ("506", "Venue Manager"),
];
const LEAVE_TYPES: &[(&str, &str)] = &[
    ("1", "Annual Leave"),
    ("2", "Personal/Carer's Leave"),
    ("3", "Long Service Leave"),
];

/// What the world is built from (the vendor-independent options plus Roubler's own).
pub struct WorldSpec {
    pub seed: u64,
    pub anchor: DateTime<Utc>,
    pub history_days: u32,
    pub records_per_day: u32,
    pub companies: u32,
    pub locations_per_company: u32,
    pub time_zones: Vec<Tz>,
    pub employees_per_location: u32,
}

pub struct CompanyData {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub locations: Vec<LocationData>,
}

pub struct LocationData {
    pub id: String,
    pub name: String,
    pub tz: Tz,
    pub rosterable: bool,
    pub parent_id: String,
    pub company_id: String,
    /// Employees whose home location this is, in id order.
    pub employees: Vec<Employee>,
    /// Hourly rate per employee (same order as `employees`), for timesheet cost.
    pub rates: Vec<f64>,
}

/// The whole generated data set. Shared read-only by every request (behind an `Arc`); only the
/// [`Edits`] inside change, and they have their own lock.
pub struct World {
    pub seed: u64,
    pub anchor: DateTime<Utc>,
    pub history_days: u32,
    pub records_per_day: u32,
    pub companies: Vec<CompanyData>,
    pub edits: Edits,
}

fn id(text: impl Into<String>) -> Option<ID> {
    Some(ID(text.into()))
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The UTC instant of a local wall-clock time; in a DST gap, the first valid instant after it,
/// and in an overlap, the earlier of the two.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    for step in 0..=8 {
        let candidate = local + Duration::minutes(30 * step);
        if let Some(at) = tz.from_local_datetime(&candidate).earliest() {
            return at.with_timezone(&Utc);
        }
    }
    // Unreachable for real zones (no gap exceeds a few hours); treat the wall time as UTC.
    local.and_utc()
}

/// The UTC instant at which local day `day` starts in `tz`.
pub fn local_midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    local_to_utc(tz, day.and_time(chrono::NaiveTime::MIN))
}

/// Applies edits: `None` when deleted, the record with overridden fields when changed.
pub(crate) fn edited<T: Serialize + DeserializeOwned>(edits: &Edits, id: &str, record: T) -> Option<T> {
    if edits.is_deleted(id) {
        return None;
    }
    let Some(changes) = edits.changes_for(id) else {
        return Some(record);
    };
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(&record) else {
        return Some(record);
    };
    for (field, value) in changes {
        fields.insert(field, value);
    }
    match serde_json::from_value(serde_json::Value::Object(fields)) {
        Ok(changed) => Some(changed),
        Err(e) => {
            tracing::warn!(id, error = %e, "Roubler edit does not fit the record type; ignored.");
            Some(record)
        }
    }
}

impl World {
    pub fn new(spec: &WorldSpec) -> World {
        let mut companies = Vec::new();
        let mut global_location = 0usize;
        for c in 0..spec.companies as usize {
            let (name, domain) = COMPANY_NAMES[c % COMPANY_NAMES.len()];
            let name = if c < COMPANY_NAMES.len() {
                name.to_owned()
            } else {
                format!("{name} {c}")
            };
            let company_id = (789 + c).to_string();
            let mut locations: Vec<LocationData> = Vec::new();
            for i in 0..spec.locations_per_company as usize {
                let location_id = (10101 + c * 100 + i).to_string();
                let tz = spec.time_zones[global_location % spec.time_zones.len()];
                global_location += 1;
                let parent_id = if i == 0 {
                    "0".to_owned()
                } else {
                    locations[(i - 1) / 2].id.clone()
                };
                let mut location = LocationData {
                    name: LOCATION_NAMES[i % LOCATION_NAMES.len()].to_owned(),
                    id: location_id,
                    tz,
                    rosterable: i != 3,
                    parent_id,
                    company_id: company_id.clone(),
                    employees: Vec::new(),
                    rates: Vec::new(),
                };
                for e in 0..spec.employees_per_location as usize {
                    let (employee, rate) = generate_employee(spec, &location, domain, e);
                    location.employees.push(employee);
                    location.rates.push(rate);
                }
                locations.push(location);
            }
            companies.push(CompanyData {
                id: company_id,
                name,
                domain: domain.to_owned(),
                locations,
            });
        }
        World {
            seed: spec.seed,
            anchor: spec.anchor,
            history_days: spec.history_days,
            records_per_day: spec.records_per_day,
            companies,
            edits: Edits::default(),
        }
    }

    pub fn company(&self, company_id: &str) -> Option<&CompanyData> {
        self.companies.iter().find(|c| c.id == company_id)
    }

    pub fn location(&self, location_id: &str) -> Option<&LocationData> {
        self.companies
            .iter()
            .flat_map(|c| c.locations.iter())
            .find(|l| l.id == location_id)
    }

    /// The company a request works on: `X-Company-ID`, which must be one the user can reach.
    pub fn company_scope(&self, scope: &Scope) -> async_graphql::Result<&CompanyData> {
        let Some(company_id) = scope.company_id.as_deref() else {
            return Err(error(
                "BadRequest",
                "The X-Company-ID header is required for this operation.",
            ));
        };
        let company = self.company(company_id).ok_or_else(|| {
            error(
                "Forbidden",
                format!("Access denied: you do not have access to company {company_id}."),
            )
        })?;
        if let Some(location_id) = scope.location_id.as_deref() {
            self.location_in(company, &ID(location_id.to_owned()))?;
        }
        Ok(company)
    }

    /// The location named by `X-Location-ID` (within `X-Company-ID` when that is sent too).
    pub fn location_scope(&self, scope: &Scope) -> async_graphql::Result<&LocationData> {
        let Some(location_id) = scope.location_id.as_deref() else {
            return Err(error(
                "BadRequest",
                "The X-Location-ID header is required for this operation.",
            ));
        };
        let location = self.location(location_id).ok_or_else(|| {
            error(
                "Forbidden",
                format!("Access denied: you do not have access to location {location_id}."),
            )
        })?;
        if let Some(company_id) = scope.company_id.as_deref()
            && company_id != location.company_id
        {
            return Err(error(
                "Forbidden",
                format!("Access denied: location {location_id} does not belong to company {company_id}."),
            ));
        }
        Ok(location)
    }

    /// A location of `company`, or an access error.
    pub fn location_in<'a>(
        &self,
        company: &'a CompanyData,
        location_id: &ID,
    ) -> async_graphql::Result<&'a LocationData> {
        company
            .locations
            .iter()
            .find(|l| l.id == location_id.as_str())
            .ok_or_else(|| {
                error(
                    "Forbidden",
                    format!(
                        "Access denied: location {} does not belong to company {}.",
                        location_id.as_str(),
                        company.id
                    ),
                )
            })
    }

    pub fn viewer(&self) -> Viewer {
        let domain = self
            .companies
            .first()
            .map_or("roubler.example", |c| c.domain.as_str());
        let employees = self.companies.iter().flat_map(|c| {
            c.locations.iter().map(|l| ViewerEmployee {
                company: Some(Company {
                    id: id(&c.id),
                    name: Some(c.name.clone()),
                }),
                location: Some(LocationRef {
                    id: id(&l.id),
                    name: Some(l.name.clone()),
                }),
            })
        });
        Viewer {
            user: Some(User {
                id: id("123"),
                full_name: Some("API User".into()),
                email: Some(format!("api@{domain}")),
            }),
            employees: list(employees),
        }
    }

    pub fn company_records(&self) -> Vec<Company> {
        self.companies
            .iter()
            .map(|c| Company {
                id: id(&c.id),
                name: Some(c.name.clone()),
            })
            .collect()
    }

    pub fn locations(&self, company_id: &str) -> Vec<Location> {
        let Some(company) = self.company(company_id) else {
            return Vec::new();
        };
        company
            .locations
            .iter()
            .filter_map(|l| {
                let record = Location {
                    id: id(&l.id),
                    name: Some(l.name.clone()),
                    time_zone: Some(l.tz.name().to_owned()),
                    rosterable: Some(l.rosterable),
                    parent_id: id(&l.parent_id),
                };
                edited(&self.edits, &l.id, record)
            })
            .collect()
    }

    pub fn employees(&self, company_id: &str) -> Vec<Employee> {
        let Some(company) = self.company(company_id) else {
            return Vec::new();
        };
        company
            .locations
            .iter()
            .flat_map(|l| l.employees.iter())
            .filter_map(|e| {
                let key = e.id.as_ref().map(|i| i.to_string()).unwrap_or_default();
                edited(&self.edits, &key, e.clone())
            })
            .collect()
    }

    /// The local days of history of a location, oldest first, ending with the anchor's local day.
    fn local_days(&self, tz: Tz) -> impl Iterator<Item = NaiveDate> + use<> {
        let last = self.anchor.with_timezone(&tz).date_naive();
        (0..self.history_days)
            .rev()
            .map(move |back| last - Duration::days(i64::from(back)))
    }

    /// Local days whose `[midnight, next midnight)` overlaps `[start, end)`.
    fn days_touching(&self, tz: Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<NaiveDate> {
        self.local_days(tz)
            .filter(|day| {
                let from = local_midnight(tz, *day);
                let to = local_midnight(tz, *day + Duration::days(1));
                from < end && to > start
            })
            .collect()
    }

    pub fn location_sales(
        &self,
        location_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<LocationSalesDay> {
        let Some(location) = self.location(location_id) else {
            return Vec::new();
        };
        let today = self.anchor.with_timezone(&location.tz).date_naive();
        self.local_days(location.tz)
            .filter(|day| {
                let midnight = local_midnight(location.tz, *day);
                start <= midnight && midnight < end
            })
            .filter_map(|day| {
                let key = format!("{}:{day}", location.id);
                let mut rng = rng_for(self.seed, &["roubler", "sales", &location.id, &day.to_string()]);
                let forecast = f64::from(rng.random_range(1500..4500u32) * 100);
                let actual = (forecast * rng.random_range(0.75..1.3)).round();
                let labour_missing = rng.random_bool(0.1);
                let hours = f64::from(rng.random_range(160..480u32)) / 4.0;
                let cost = (hours * f64::from(rng.random_range(2600..3400u32))).round();
                let record = LocationSalesDay {
                    day: Some(GqlDate(day)),
                    forecast: Some(forecast),
                    // The current day is not over: no actual figure yet.
                    actual: (day != today).then_some(actual),
                    hours: Some(if labour_missing { 0.0 } else { hours }),
                    cost: Some(if labour_missing { 0.0 } else { cost }),
                };
                edited(&self.edits, &key, record)
            })
            .collect()
    }

    /// The employees a location rosters (not terminated), with their rates.
    fn workers(location: &LocationData) -> Vec<(&Employee, f64)> {
        let all: Vec<(&Employee, f64)> = location
            .employees
            .iter()
            .zip(location.rates.iter().copied())
            .collect();
        let working: Vec<(&Employee, f64)> = all
            .iter()
            .copied()
            .filter(|(e, _)| e.status != Some(EmployeeStatus::Terminated))
            .collect();
        if working.is_empty() { all } else { working }
    }

    /// Start, end and breaks of the `n`th record of `kind` at `location` on local day `day`.
    fn work_period(
        &self,
        kind: &str,
        location: &LocationData,
        day: NaiveDate,
        n: u32,
    ) -> (
        rand_chacha::ChaCha8Rng,
        DateTime<Utc>,
        DateTime<Utc>,
        Vec<Break>,
        f64,
    ) {
        let mut rng = rng_for(
            self.seed,
            &["roubler", kind, &location.id, &day.to_string(), &n.to_string()],
        );
        let start_minute = 5 * 60 + rng.random_range(0..48i64) * 15;
        let length = rng.random_range(16..=40i64) * 15;
        let start = local_to_utc(
            location.tz,
            day.and_time(chrono::NaiveTime::MIN) + Duration::minutes(start_minute),
        );
        let end = start + Duration::minutes(length);
        let kind_digit = if kind == "timesheet" { 1 } else { 2 };
        let record_id = Self::record_id(location, day, kind_digit, n);
        let mut breaks = Vec::new();
        let mut unpaid = 0;
        if length >= 300 {
            let at = start + Duration::minutes(length / 30 * 15);
            breaks.push(Break {
                id: id(format!("{record_id}1")),
                start_time: Some(GqlDateTime(at)),
                end_time: Some(GqlDateTime(at + Duration::minutes(30))),
                subtracts: Some(true),
            });
            unpaid = 30;
        }
        let hours = (length - unpaid) as f64 / 60.0;
        (rng, start, end, breaks, hours)
    }

    fn record_id(location: &LocationData, day: NaiveDate, kind_digit: u32, n: u32) -> String {
        let day_number = (day - NaiveDate::default()).num_days();
        format!("{}{:05}{}{:02}", location.id, day_number, kind_digit, n)
    }

    pub fn timesheets(&self, location_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Timesheet> {
        let Some(location) = self.location(location_id) else {
            return Vec::new();
        };
        let workers = Self::workers(location);
        let mut out = Vec::new();
        for day in self.days_touching(location.tz, start, end) {
            for n in 0..self.records_per_day {
                let (mut rng, from, to, breaks, hours) = self.work_period("timesheet", location, day, n);
                if from < start || from >= end || from > self.anchor {
                    continue;
                }
                let worker = workers.choose(&mut rng).copied();
                let rate = worker.map_or(30.0, |(_, rate)| rate);
                let overtime = rng.random_bool(0.15);
                let status = [
                    "approved", "approved", "approved", "approved", "pending", "pending", "rejected",
                ]
                .choose(&mut rng)
                .copied()
                .unwrap_or("approved");
                let variance = f64::from(rng.random_range(-4..=4i32)) * 0.25;
                let record_id = Self::record_id(location, day, 1, n);
                let record = Timesheet {
                    id: id(&record_id),
                    start_time: Some(GqlDateTime(from)),
                    end_time: Some(GqlDateTime(to)),
                    status: Some(status.to_owned()),
                    hours: Some(hours),
                    cost: Some(round2(hours * rate * if overtime { 1.5 } else { 1.0 })),
                    variance: Some(variance),
                    work_type: Some(if overtime {
                        super::schema::WorkType {
                            id: id("2"),
                            name: Some("Overtime".into()),
                            applied_from_id: id("1"),
                        }
                    } else {
                        super::schema::WorkType {
                            id: id("1"),
                            name: Some("Ordinary Hours".into()),
                            applied_from_id: None,
                        }
                    }),
                    breaks: list(breaks),
                    employee: worker.map(|(e, _)| employee_ref(e)),
                    position: worker.and_then(|(e, _)| position_text(e)),
                    location: Some(LocationTz {
                        id: id(&location.id),
                        name: Some(location.name.clone()),
                        timezone: Some(location.tz.name().to_owned()),
                    }),
                };
                out.extend(edited(&self.edits, &record_id, record));
            }
        }
        out.sort_by(|a, b| (a.start_time, a.id.as_ref()).cmp(&(b.start_time, b.id.as_ref())));
        out
    }

    pub fn shifts(&self, location_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Shift> {
        let Some(location) = self.location(location_id) else {
            return Vec::new();
        };
        let workers = Self::workers(location);
        let mut out = Vec::new();
        for day in self.days_touching(location.tz, start, end) {
            for n in 0..self.records_per_day {
                let (mut rng, from, to, breaks, hours) = self.work_period("shift", location, day, n);
                if from < start || from >= end || from > self.anchor {
                    continue;
                }
                let worker = workers.choose(&mut rng).copied();
                let record_id = Self::record_id(location, day, 2, n);
                let record = Shift {
                    id: id(&record_id),
                    start_time: Some(GqlDateTime(from)),
                    end_time: Some(GqlDateTime(to)),
                    breaks: list(breaks.into_iter().map(ShiftBreak::from)),
                    published: Some(rng.random_bool(0.9)),
                    hours: Some(hours),
                    // An open (unassigned) shift now and then.
                    employee: worker
                        .filter(|_| !rng.random_bool(0.05))
                        .map(|(e, _)| employee_ref(e)),
                    position: worker.and_then(|(e, _)| position_text(e)),
                    location: Some(LocationRef {
                        id: id(&location.id),
                        name: Some(location.name.clone()),
                    }),
                };
                out.extend(edited(&self.edits, &record_id, record));
            }
        }
        out.sort_by(|a, b| (a.start_time, a.id.as_ref()).cmp(&(b.start_time, b.id.as_ref())));
        out
    }

    /// Leave balances of an employee of the company; `None` when there is no such employee.
    pub fn leave_balance(&self, company_id: &str, employee_id: &ID) -> Option<Vec<LeaveBalance>> {
        let company = self.company(company_id)?;
        let found = company
            .locations
            .iter()
            .flat_map(|l| l.employees.iter())
            .any(|e| e.id.as_ref() == Some(employee_id));
        if !found {
            return None;
        }
        let mut rng = rng_for(self.seed, &["roubler", "leave_balance", employee_id.as_str()]);
        Some(
            LEAVE_TYPES
                .iter()
                .map(|(type_id, name)| LeaveBalance {
                    leave_type: Some(LeaveType {
                        id: id(*type_id),
                        name: Some((*name).to_owned()),
                    }),
                    balance: Some(round2(rng.random_range(0.0..160.0))),
                    unit: Some("hours".into()),
                })
                .collect(),
        )
    }

    pub fn leave_requests(&self, company_id: &str) -> Vec<LeaveRequest> {
        let Some(company) = self.company(company_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for location in &company.locations {
            for employee in &location.employees {
                let Some(employee_id) = employee.id.as_ref() else {
                    continue;
                };
                let mut rng = rng_for(self.seed, &["roubler", "leave_requests", employee_id.as_str()]);
                for k in 0..2u32 {
                    let back = rng.random_range(0..self.history_days.max(1));
                    let length = rng.random_range(1..=3i64);
                    let day = self.anchor.with_timezone(&location.tz).date_naive()
                        - Duration::days(i64::from(back));
                    let (type_id, name) = LEAVE_TYPES[rng.random_range(0..LEAVE_TYPES.len())];
                    let request_id = format!("{}{:02}", employee_id.as_str(), k);
                    let record = LeaveRequest {
                        id: id(&request_id),
                        employee: Some(employee_ref(employee)),
                        leave_type: Some(LeaveType {
                            id: id(type_id),
                            name: Some(name.to_owned()),
                        }),
                        start_time: Some(GqlDateTime(local_midnight(location.tz, day))),
                        end_time: Some(GqlDateTime(local_midnight(
                            location.tz,
                            day + Duration::days(length),
                        ))),
                        approved: Some(rng.random_bool(0.7)),
                        hours: Some(round2(7.6 * length as f64)),
                    };
                    out.extend(edited(&self.edits, &request_id, record));
                }
            }
        }
        out
    }

    pub fn cost_centres(&self, company_id: &str) -> Vec<CostCentre> {
        const NAMES: &[&str] = &["Front of House", "Kitchen", "Management", "Events (old)"];
        NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| CostCentre {
                id: id(format!("{company_id}1{i:02}")),
                name: Some((*name).to_owned()),
                code: Some(format!("CC{:03}", i + 1)),
                archived: Some(i == NAMES.len() - 1),
            })
            .collect()
    }

    pub fn pay_rules(&self, company_id: &str) -> Vec<PayRule> {
        const NAMES: &[&str] = &["Hospitality Award Level 2", "Saturday Penalty", "Public Holiday"];
        NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| PayRule {
                id: id(format!("{company_id}2{i:02}")),
                name: Some((*name).to_owned()),
            })
            .collect()
    }
}

fn employee_ref(e: &Employee) -> EmployeeRef {
    EmployeeRef {
        id: e.id.clone(),
        full_name: e.full_name.clone(),
    }
}

fn position_text(e: &Employee) -> Option<PositionText> {
    e.position.as_ref().map(|p| PositionText {
        id: p.id.clone(),
        text: p.name.clone(),
    })
}

fn generate_employee(
    spec: &WorldSpec,
    location: &LocationData,
    domain: &str,
    index: usize,
) -> (Employee, f64) {
    let employee_id = format!("{}{index:03}", location.id);
    let mut rng = rng_for(spec.seed, &["roubler", "employee", &employee_id]);
    let first = *FIRST_NAMES.choose(&mut rng).unwrap_or(&"Alex");
    let last = *LAST_NAMES.choose(&mut rng).unwrap_or(&"Doe");
    // Every eighth employee (index 5, 13, ...) has left, so each location has terminated people.
    let status = if index % 8 == 5 {
        EmployeeStatus::Terminated
    } else {
        match rng.random_range(0..100) {
            0..85 => EmployeeStatus::Active,
            85..93 => EmployeeStatus::Onboarding,
            _ => EmployeeStatus::Invited,
        }
    };
    let start_date = spec.anchor.date_naive() - Duration::days(rng.random_range(30..1500));
    let terminated_at = (status == EmployeeStatus::Terminated).then(|| {
        spec.anchor - Duration::days(rng.random_range(3..25)) - Duration::minutes(rng.random_range(0..1440))
    });
    let modified_at =
        terminated_at.unwrap_or_else(|| spec.anchor - Duration::minutes(rng.random_range(60..60 * 24 * 90)));
    let (position_id, position_name) = *POSITIONS.choose(&mut rng).unwrap_or(&POSITIONS[0]);
    let login = format!(
        "{}.{}",
        first.to_lowercase(),
        last.to_lowercase().replace(['\'', 'ü'], "")
    );
    let mobile = rng.random_bool(0.8).then(|| match location.tz.name() {
        name if name.starts_with("Europe/") => format!(
            "+49 15{} {:07}",
            rng.random_range(1..8),
            rng.random_range(0..10_000_000)
        ),
        _ => format!(
            "+61 4{:02} {:03} {:03}",
            rng.random_range(0..100),
            rng.random_range(0..1000),
            rng.random_range(0..1000)
        ),
    });
    let employee = Employee {
        id: id(&employee_id),
        full_name: Some(format!("{first} {last}")),
        // Invited people have no work email yet; the API shows that as an empty string.
        work_email: Some(if status == EmployeeStatus::Invited {
            String::new()
        } else {
            format!("{login}@{domain}")
        }),
        status: Some(status),
        rosterable: Some(status != EmployeeStatus::Terminated && rng.random_bool(0.9)),
        visible: Some(status != EmployeeStatus::Terminated || rng.random_bool(0.5)),
        person: Some(Person {
            mobile,
            email: Some(format!("{login}{}@mail.example", rng.random_range(1..99))),
            date_of_birth: rng.random_bool(0.85).then(|| {
                GqlDate(spec.anchor.date_naive() - Duration::days(rng.random_range(18 * 365..60 * 365)))
            }),
        }),
        location: Some(LocationRef {
            id: id(&location.id),
            name: Some(location.name.clone()),
        }),
        position: Some(PositionRef {
            id: id(position_id),
            name: Some(position_name.to_owned()),
        }),
        start_date: Some(GqlDate(start_date)),
        terminated_at: terminated_at.map(GqlDateTime),
        modified_at: Some(GqlDateTime(modified_at)),
    };
    let rate = f64::from(rng.random_range(50..90u32)) / 2.0;
    (employee, rate)
}
