//! Retently (REST v2 through the executor's `get_json`): customers and feedback by creation date,
//! companies and campaigns as snapshots, and a daily NPS snapshot.
//!
//! Lists are paged with `page` (from 1) and `limit` until `page >= pages`. Windowed lists are
//! asked for `startDate`/`endDate` and sorted ascending by `createdDate`, so records created
//! while paging land on later pages instead of shifting earlier ones. Whether the vendor's
//! `endDate` is inclusive is not documented: the request ends a millisecond before the window
//! and rows are filtered to `[start, end)` here as well, so either reading gives the same rows.

use std::marker::PhantomData;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::catalog::{Dataset, DatasetInfo, WindowPolicy};
use crate::datasets::rows::{TableRow, table_row};
use crate::datasets::seen::SeenInLoad;
use crate::datasets::sink::{Replace, Sink, TableSpec, Writer};
use crate::datasets::{LoadFigures, LoadRequest, Tuning, Window};
use crate::executor::Executor;
use crate::failure::Failure;

use super::list::ListAnswer;

table_row! {
    /// A customer (`retently.customers`), filed under its creation time. The id is optional
    /// because the vendor may omit it: such rows are counted and skipped ([`ListRow::has_id`]).
    /// Read straight from the vendor's record, whose fields are the columns.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CustomerRow in "retently.customers" {
        key: [customer_id],
        window: created_date,
        columns: {
            #[serde(rename = "id")]
            customer_id: Option<String>,
            #[serde(default, deserialize_with = "lenient_instant")]
            created_date: Option<DateTime<Utc>>,
            email: Option<String>,
            first_name: Option<String>,
            last_name: Option<String>,
            company_name: Option<String>,
            company_id: Option<String>,
            tags: Option<Value>,
            properties: Option<Value>,
        }
    }
}

table_row! {
    /// A survey response (`retently.feedback`), filed under its creation time; rows without an
    /// id are skipped as for customers. Read straight from the vendor's record.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct FeedbackRow in "retently.feedback" {
        key: [feedback_id],
        window: created_date,
        columns: {
            #[serde(rename = "id")]
            feedback_id: Option<String>,
            #[serde(default, deserialize_with = "lenient_instant")]
            created_date: Option<DateTime<Utc>>,
            customer_id: Option<String>,
            email: Option<String>,
            first_name: Option<String>,
            last_name: Option<String>,
            company_name: Option<String>,
            job_title: Option<String>,
            country: Option<String>,
            state: Option<String>,
            city: Option<String>,
            tags: Option<Value>,
            custom_props: Option<Value>,
            campaign_id: Option<String>,
            campaign_name: Option<String>,
            score: Option<i64>,
            comment: Option<String>,
            checkbox: Option<bool>,
            additional_questions: Option<Value>,
            feedback_tags: Option<Value>,
            notes: Option<Value>,
            status: Option<String>,
            assigned: Option<String>,
            rating_category: Option<String>,
            resolved: Option<bool>,
            channel: Option<String>,
            metrics_type: Option<String>,
            is_bogus: Option<bool>,
        }
    }
}

table_row! {
    /// A company with its CX metrics (`retently.companies`), from the snapshot; rows without an
    /// id are skipped as for customers.
    pub struct CompanyRow in "retently.companies" {
        key: [company_id],
        columns: {
            company_id: Option<String>,
            created_date: Option<DateTime<Utc>>,
            domain: Option<String>,
            company_name: Option<String>,
            industry_name: Option<String>,
            tags: Option<Value>,
            nps: Option<f64>,
            csat: Option<f64>,
            ces: Option<f64>,
            star: Option<f64>,
            contacts_count: Option<i64>,
        }
    }
}

table_row! {
    /// A survey campaign (`retently.campaigns`), from the snapshot.
    pub struct CampaignRow in "retently.campaigns" {
        key: [campaign_id],
        columns: {
            campaign_id: String,
            name: Option<String>,
            is_active: Option<bool>,
            template_id: Option<String>,
            metric: Option<String>,
            campaign_type: Option<String>,
            channel: Option<String>,
        }
    }
}

table_row! {
    /// The source's NPS figures as of one UTC day (`retently.nps_score`).
    pub struct NpsScoreRow in "retently.nps_score" {
        key: [day],
        window: day,
        columns: {
            day: NaiveDate,
            nps: Option<f64>,
            promoters: Option<f64>,
            passives: Option<f64>,
            detractors: Option<f64>,
            promoters_count: Option<i64>,
            passives_count: Option<i64>,
            detractors_count: Option<i64>,
            total_responses: Option<i64>,
        }
    }
}

/// A row of a paged list resource, whose record may come without an id.
trait ListRow: TableRow {
    /// Whether the record had an id: rows without one cannot be told apart and are skipped.
    fn has_id(&self) -> bool;
}

impl ListRow for CustomerRow {
    fn has_id(&self) -> bool {
        self.customer_id.is_some()
    }
}

impl ListRow for FeedbackRow {
    fn has_id(&self) -> bool {
        self.feedback_id.is_some()
    }
}

impl ListRow for CompanyRow {
    fn has_id(&self) -> bool {
        self.company_id.is_some()
    }
}

/// Survey customers (subscribers).
pub const CUSTOMERS: Dataset = Dataset::new(&DatasetInfo::new(
    super::KIND,
    "customers",
    "retently.customers",
    WindowPolicy::Incremental,
));
/// Survey responses.
pub const FEEDBACK: Dataset = Dataset::new(&DatasetInfo::new(
    super::KIND,
    "feedback",
    "retently.feedback",
    WindowPolicy::Incremental,
));
/// Companies with their survey metrics.
pub const COMPANIES: Dataset = Dataset::new(&DatasetInfo::new(
    super::KIND,
    "companies",
    "retently.companies",
    WindowPolicy::Snapshot,
));
/// Survey campaigns.
pub const CAMPAIGNS: Dataset = Dataset::new(&DatasetInfo::new(
    super::KIND,
    "campaigns",
    "retently.campaigns",
    WindowPolicy::Snapshot,
));
/// Daily snapshot of the NPS score.
pub const NPS_SCORE: Dataset = Dataset::new(&DatasetInfo::new(
    super::KIND,
    "nps_score",
    "retently.nps_score",
    WindowPolicy::Snapshot,
));

/// Retently's datasets, in the order the README lists them.
pub const DATASETS: &[Dataset] = &[CUSTOMERS, FEEDBACK, COMPANIES, CAMPAIGNS, NPS_SCORE];

pub(crate) fn table(dataset: Dataset) -> Option<&'static TableSpec> {
    Some(match dataset {
        CUSTOMERS => CustomerRow::spec(),
        FEEDBACK => FeedbackRow::spec(),
        COMPANIES => CompanyRow::spec(),
        CAMPAIGNS => CampaignRow::spec(),
        NPS_SCORE => NpsScoreRow::spec(),
        _ => return None,
    })
}

/// `{"message", "code", "data": …}`.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    data: Option<T>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Company {
    id: Option<String>,
    created_date: Option<String>,
    domain: Option<String>,
    company_name: Option<String>,
    industry_name: Option<String>,
    tags: Option<Value>,
    cx_metrics: Option<CxMetrics>,
    contacts_count: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct CxMetrics {
    #[serde(rename = "NPS")]
    nps: Option<f64>,
    #[serde(rename = "CSAT")]
    csat: Option<f64>,
    #[serde(rename = "CES")]
    ces: Option<f64>,
    #[serde(rename = "STAR")]
    star: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Campaigns {
    campaigns: Option<Vec<Option<Campaign>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Campaign {
    id: Option<String>,
    name: Option<String>,
    is_active: Option<bool>,
    template_id: Option<String>,
    metric: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    channel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Nps {
    nps: Option<f64>,
    promoters: Option<f64>,
    passives: Option<f64>,
    detractors: Option<f64>,
    promoters_count: Option<i64>,
    passives_count: Option<i64>,
    detractors_count: Option<i64>,
    total_responses: Option<i64>,
}

/// Retently's timestamps (`2019-07-28T04:33:13.217Z`); anything unparseable is unknown.
fn instant(text: &Option<String>) -> Option<DateTime<Utc>> {
    text.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// [`instant`] for a record's field: a missing, null or unparseable timestamp is unknown.
fn lenient_instant<'de, D: Deserializer<'de>>(field: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Ok(instant(&Option::<String>::deserialize(field)?))
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) async fn load(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    match request.dataset.id() {
        CUSTOMERS => {
            let window = request.window.context("retently.customers needs a window")?;
            load_list::<CustomerRow, CustomerRow>(
                exec,
                sink,
                request,
                tuning,
                "/api/v2/customers",
                "subscribers",
                Some(window),
                |c| (c.created_date, c),
            )
            .await
        }
        FEEDBACK => {
            let window = request.window.context("retently.feedback needs a window")?;
            load_list::<FeedbackRow, FeedbackRow>(
                exec,
                sink,
                request,
                tuning,
                "/api/v2/feedback",
                "responses",
                Some(window),
                |f| (f.created_date, f),
            )
            .await
        }
        COMPANIES => {
            load_list::<Company, CompanyRow>(
                exec,
                sink,
                request,
                tuning,
                "/api/v2/companies",
                "companies",
                None,
                |c| {
                    let created = instant(&c.created_date);
                    let metrics = c.cx_metrics.unwrap_or(CxMetrics {
                        nps: None,
                        csat: None,
                        ces: None,
                        star: None,
                    });
                    let row = CompanyRow {
                        company_id: c.id,
                        created_date: created,
                        domain: c.domain,
                        company_name: c.company_name,
                        industry_name: c.industry_name,
                        tags: c.tags,
                        nps: metrics.nps,
                        csat: metrics.csat,
                        ces: metrics.ces,
                        star: metrics.star,
                        contacts_count: c.contacts_count,
                    };
                    (created, row)
                },
            )
            .await
        }
        CAMPAIGNS => load_campaigns(exec, sink, request).await,
        NPS_SCORE => load_nps(exec, sink, request).await,
        other => anyhow::bail!("retently has no dataset {other}"),
    }
}

/// Pages through a list resource into `R`'s table. `map` gives each record's creation instant
/// (for the window filter) and its row; rows without an id ([`ListRow::has_id`]) are skipped.
#[allow(clippy::too_many_arguments)]
async fn load_list<T: DeserializeOwned, R: ListRow>(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
    path: &str,
    key: &str,
    window: Option<Window>,
    map: impl Fn(T) -> (Option<DateTime<Utc>>, R),
) -> anyhow::Result<LoadFigures> {
    let spec = R::spec();
    let mut writer = Writer::open(sink, spec, request.source_name, request.run_id).await?;
    let replace = match window {
        Some(w) => Replace::Instants {
            scope: None,
            start: w.start,
            end: w.end,
        },
        None => Replace::All { scope: None },
    };
    writer.replace(sink, &replace).await?;
    // `limit`: documented maximum 1,000.
    let limit = tuning.page_size(super::KIND, 1_000);
    let mut warnings = Vec::new();
    let (mut undated, mut unnamed) = (0usize, 0usize);
    let mut page = 1i64;
    let mut seen = SeenInLoad::default();
    let mut total = None;
    loop {
        let mut query = vec![("page", page.to_string()), ("limit", limit.to_string())];
        if let Some(w) = window {
            query.push(("sort", "createdDate".to_owned()));
            query.push(("startDate", iso(w.start)));
            query.push(("endDate", iso(w.end - TimeDelta::milliseconds(1))));
        }
        let what = || format!("fetching page {page} of retently.{}", request.dataset.name);
        // Straight into the records' types: no JSON tree of the page in between.
        let answer = exec
            .get_json_seeded(request.call, path, &query, || ListAnswer::<T> {
                key,
                records: PhantomData,
            })
            .await
            .with_context(what)?;
        writer.pages += 1;
        let Some(data) = answer else {
            return Err(Failure::invalid_answer(format!("{}: the answer has no data", what())).into());
        };
        let records = data.records;
        let fetched = records.len();
        let mapped: Vec<(Option<DateTime<Utc>>, R)> = records.into_iter().flatten().map(&map).collect();
        seen.check_records(mapped.iter().map(|(_, row)| row))
            .with_context(what)?;
        let mut rows = Vec::with_capacity(fetched);
        for (created, row) in mapped {
            if !row.has_id() {
                unnamed += 1;
                continue;
            }
            if let Some(w) = window {
                match created {
                    Some(at) if at >= w.start && at < w.end => {}
                    // At a bound the vendor may include what the half-open window excludes.
                    Some(_) => continue,
                    None => {
                        undated += 1;
                        continue;
                    }
                }
            }
            rows.push(row);
        }
        writer.write(sink, rows).await.with_context(what)?;
        let pages = data.pages.unwrap_or(1);
        let current = data.page.unwrap_or(page);
        seen.check_position("page", &current.to_string())
            .with_context(what)?;
        total = data.total.or(total);
        if fetched == 0 || current >= pages {
            break;
        }
        page += 1;
    }
    if unnamed == 0 {
        // Records without an id cannot be told apart, so the count is only exact without them.
        if let Some(unchecked) = seen
            .check_total(total)
            .with_context(|| format!("loading retently.{}", request.dataset.name))?
        {
            warnings.push(unchecked);
        }
    }
    if undated > 0 {
        warnings.push(format!(
            "{undated} record(s) without a readable createdDate were skipped"
        ));
    }
    if unnamed > 0 {
        warnings.push(format!("{unnamed} record(s) without an id were skipped"));
    }
    writer.finish(sink, warnings).await
}

async fn load_campaigns(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
) -> anyhow::Result<LoadFigures> {
    let mut writer = Writer::open(sink, CampaignRow::spec(), request.source_name, request.run_id).await?;
    writer.replace(sink, &Replace::All { scope: None }).await?;
    // Campaigns are the one resource whose list is a top-level key, not under `data`.
    let answer: Campaigns = exec
        .get_json(request.call, "/api/v2/campaigns", &[])
        .await
        .context("fetching retently.campaigns")?;
    writer.pages += 1;
    let mut unnamed = 0;
    let rows: Vec<CampaignRow> = answer
        .campaigns
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let Some(id) = c.id else {
                unnamed += 1;
                return None;
            };
            Some(CampaignRow {
                campaign_id: id,
                name: c.name,
                is_active: c.is_active,
                template_id: c.template_id,
                metric: c.metric,
                campaign_type: c.kind,
                channel: c.channel,
            })
        })
        .collect();
    writer.write(sink, rows).await?;
    let mut warnings = Vec::new();
    if unnamed > 0 {
        warnings.push(format!("{unnamed} campaign(s) without an id were skipped"));
    }
    writer.finish(sink, warnings).await
}

async fn load_nps(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
) -> anyhow::Result<LoadFigures> {
    // One row per source and UTC day: a rerun the same day replaces that day's row and leaves
    // the history of earlier days alone.
    let day = Utc::now().date_naive();
    let mut writer = Writer::open(sink, NpsScoreRow::spec(), request.source_name, request.run_id).await?;
    writer
        .replace(
            sink,
            &Replace::Dates {
                scope: None,
                first: day,
                last: day + TimeDelta::days(1),
            },
        )
        .await?;
    let answer: Envelope<Nps> = exec
        .get_json(request.call, "/api/v2/nps/score", &[])
        .await
        .context("fetching retently.nps_score")?;
    writer.pages += 1;
    let nps = answer
        .data
        .ok_or_else(|| Failure::invalid_answer("retently nps/score answered without data"))?;
    writer
        .write(
            sink,
            vec![NpsScoreRow {
                day,
                nps: nps.nps,
                promoters: nps.promoters,
                passives: nps.passives,
                detractors: nps.detractors,
                promoters_count: nps.promoters_count,
                passives_count: nps.passives_count,
                detractors_count: nps.detractors_count,
                total_responses: nps.total_responses,
            }],
        )
        .await?;
    writer.finish(sink, Vec::new()).await
}
