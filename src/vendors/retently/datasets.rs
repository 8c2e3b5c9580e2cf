//! Retently (REST v2 through the executor's `get_json`): customers and feedback by creation date,
//! companies and campaigns as snapshots, and a daily NPS snapshot.
//!
//! Lists are paged with `page` (from 1) and `limit` until `page >= pages`. Windowed lists are
//! asked for `startDate`/`endDate` and sorted ascending by `createdDate`, so records created
//! while paging land on later pages instead of shifting earlier ones. Whether the vendor's
//! `endDate` is inclusive is not documented: the request ends a millisecond before the window
//! and rows are filtered to `[start, end)` here as well, so either reading gives the same rows.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::catalog::Dataset;
use crate::datasets::rows::Row;
use crate::datasets::seen::SeenInLoad;
use crate::datasets::sink::{Replace, Sink, TableSpec, Writer};
use crate::datasets::{LoadFigures, LoadRequest, Tuning, Window};
use crate::executor::Executor;
use crate::failure::Failure;

pub(crate) static CUSTOMERS: TableSpec = TableSpec {
    table: "retently.customers",
    columns: &[
        "customer_id",
        "created_date",
        "email",
        "first_name",
        "last_name",
        "company_name",
        "company_id",
        "tags",
        "properties",
    ],
    key: &["customer_id"],
    scope_column: None,
    window_column: Some("created_date"),
    column_types: crate::datasets::rows::untyped,
};

pub(crate) static FEEDBACK: TableSpec = TableSpec {
    table: "retently.feedback",
    columns: &[
        "feedback_id",
        "created_date",
        "customer_id",
        "email",
        "first_name",
        "last_name",
        "company_name",
        "job_title",
        "country",
        "state",
        "city",
        "tags",
        "custom_props",
        "campaign_id",
        "campaign_name",
        "score",
        "comment",
        "checkbox",
        "additional_questions",
        "feedback_tags",
        "notes",
        "status",
        "assigned",
        "rating_category",
        "resolved",
        "channel",
        "metrics_type",
        "is_bogus",
    ],
    key: &["feedback_id"],
    scope_column: None,
    window_column: Some("created_date"),
    column_types: crate::datasets::rows::untyped,
};

pub(crate) static COMPANIES: TableSpec = TableSpec {
    table: "retently.companies",
    columns: &[
        "company_id",
        "created_date",
        "domain",
        "company_name",
        "industry_name",
        "tags",
        "nps",
        "csat",
        "ces",
        "star",
        "contacts_count",
    ],
    key: &["company_id"],
    scope_column: None,
    window_column: None,
    column_types: crate::datasets::rows::untyped,
};

pub(crate) static CAMPAIGNS: TableSpec = TableSpec {
    table: "retently.campaigns",
    columns: &[
        "campaign_id",
        "name",
        "is_active",
        "template_id",
        "metric",
        "campaign_type",
        "channel",
    ],
    key: &["campaign_id"],
    scope_column: None,
    window_column: None,
    column_types: crate::datasets::rows::untyped,
};

pub(crate) static NPS_SCORE: TableSpec = TableSpec {
    table: "retently.nps_score",
    columns: &[
        "day",
        "nps",
        "promoters",
        "passives",
        "detractors",
        "promoters_count",
        "passives_count",
        "detractors_count",
        "total_responses",
    ],
    key: &["day"],
    scope_column: None,
    window_column: Some("day"),
    column_types: crate::datasets::rows::untyped,
};

pub(crate) fn table(dataset: Dataset) -> Option<&'static TableSpec> {
    Some(match dataset {
        Dataset::Customers => &CUSTOMERS,
        Dataset::Feedback => &FEEDBACK,
        Dataset::Companies => &COMPANIES,
        Dataset::Campaigns => &CAMPAIGNS,
        Dataset::NpsScore => &NPS_SCORE,
        _ => return None,
    })
}

/// `{"message", "code", "data": …}`.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    data: Option<T>,
}

/// The `data` of a list: the collection under its key, plus paging.
#[derive(Debug, Deserialize)]
struct ListData {
    page: Option<i64>,
    pages: Option<i64>,
    /// Records matching the query, over all pages (documented: `"total":1000`).
    total: Option<i64>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Customer {
    id: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    company_name: Option<String>,
    company_id: Option<String>,
    tags: Option<Value>,
    properties: Option<Value>,
    created_date: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Feedback {
    id: Option<String>,
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
    created_date: Option<String>,
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

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) async fn load(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    match request.dataset.id {
        Dataset::Customers => {
            let window = request.window.context("retently.customers needs a window")?;
            load_list::<Customer>(
                exec,
                sink,
                request,
                tuning,
                &CUSTOMERS,
                "/api/v2/customers",
                "subscribers",
                Some(window),
                |c| {
                    let created = instant(&c.created_date);
                    let row = vec![
                        c.id.into(),
                        created.into(),
                        c.email.into(),
                        c.first_name.into(),
                        c.last_name.into(),
                        c.company_name.into(),
                        c.company_id.into(),
                        c.tags.into(),
                        c.properties.into(),
                    ];
                    (created, row)
                },
            )
            .await
        }
        Dataset::Feedback => {
            let window = request.window.context("retently.feedback needs a window")?;
            load_list::<Feedback>(
                exec,
                sink,
                request,
                tuning,
                &FEEDBACK,
                "/api/v2/feedback",
                "responses",
                Some(window),
                |f| {
                    let created = instant(&f.created_date);
                    let row = vec![
                        f.id.into(),
                        created.into(),
                        f.customer_id.into(),
                        f.email.into(),
                        f.first_name.into(),
                        f.last_name.into(),
                        f.company_name.into(),
                        f.job_title.into(),
                        f.country.into(),
                        f.state.into(),
                        f.city.into(),
                        f.tags.into(),
                        f.custom_props.into(),
                        f.campaign_id.into(),
                        f.campaign_name.into(),
                        f.score.into(),
                        f.comment.into(),
                        f.checkbox.into(),
                        f.additional_questions.into(),
                        f.feedback_tags.into(),
                        f.notes.into(),
                        f.status.into(),
                        f.assigned.into(),
                        f.rating_category.into(),
                        f.resolved.into(),
                        f.channel.into(),
                        f.metrics_type.into(),
                        f.is_bogus.into(),
                    ];
                    (created, row)
                },
            )
            .await
        }
        Dataset::Companies => {
            load_list::<Company>(
                exec,
                sink,
                request,
                tuning,
                &COMPANIES,
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
                    let row = vec![
                        c.id.into(),
                        created.into(),
                        c.domain.into(),
                        c.company_name.into(),
                        c.industry_name.into(),
                        c.tags.into(),
                        metrics.nps.into(),
                        metrics.csat.into(),
                        metrics.ces.into(),
                        metrics.star.into(),
                        c.contacts_count.into(),
                    ];
                    (created, row)
                },
            )
            .await
        }
        Dataset::Campaigns => load_campaigns(exec, sink, request).await,
        Dataset::NpsScore => load_nps(exec, sink, request).await,
        other => anyhow::bail!("retently has no dataset {other}"),
    }
}

/// Pages through a list resource. `map` gives each record's creation instant (for the window
/// filter) and its row; rows whose first cell (the id) is NULL are skipped.
#[allow(clippy::too_many_arguments)]
async fn load_list<T: DeserializeOwned>(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
    spec: &'static TableSpec,
    path: &str,
    key: &str,
    window: Option<Window>,
    map: impl Fn(T) -> (Option<DateTime<Utc>>, Row),
) -> anyhow::Result<LoadFigures> {
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
    let limit = tuning.retently_page_size.clamp(1, 1000);
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
        let envelope: Envelope<ListData> = exec
            .get_json(request.call, path, &query)
            .await
            .with_context(what)?;
        writer.pages += 1;
        let Some(mut data) = envelope.data else {
            return Err(Failure::invalid_answer(format!("{}: the answer has no data", what())).into());
        };
        let items = data.rest.remove(key).unwrap_or(Value::Null);
        let records: Vec<Option<T>> = if items.is_null() {
            Vec::new()
        } else {
            serde_json::from_value(items).with_context(|| format!("{}: reading data.{key}", what()))?
        };
        let fetched = records.len();
        let mapped: Vec<(Option<DateTime<Utc>>, Row)> = records.into_iter().flatten().map(&map).collect();
        seen.check_records(spec, mapped.iter().map(|(_, row)| row))
            .with_context(what)?;
        let mut rows = Vec::with_capacity(fetched);
        for (created, row) in mapped {
            if matches!(row.first(), Some(crate::datasets::rows::Cell::Text(None)) | None) {
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
    let figures = LoadFigures {
        rows: writer.rows,
        pages: writer.pages,
        warnings,
    };
    writer.close(sink).await?;
    Ok(figures)
}

async fn load_campaigns(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
) -> anyhow::Result<LoadFigures> {
    let mut writer = Writer::open(sink, &CAMPAIGNS, request.source_name, request.run_id).await?;
    writer.replace(sink, &Replace::All { scope: None }).await?;
    // Campaigns are the one resource whose list is a top-level key, not under `data`.
    let answer: Campaigns = exec
        .get_json(request.call, "/api/v2/campaigns", &[])
        .await
        .context("fetching retently.campaigns")?;
    writer.pages += 1;
    let mut unnamed = 0;
    let rows: Vec<Row> = answer
        .campaigns
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let Some(id) = c.id else {
                unnamed += 1;
                return None;
            };
            Some(vec![
                id.into(),
                c.name.into(),
                c.is_active.into(),
                c.template_id.into(),
                c.metric.into(),
                c.kind.into(),
                c.channel.into(),
            ])
        })
        .collect();
    writer.write(sink, rows).await?;
    let mut warnings = Vec::new();
    if unnamed > 0 {
        warnings.push(format!("{unnamed} campaign(s) without an id were skipped"));
    }
    let figures = LoadFigures {
        rows: writer.rows,
        pages: writer.pages,
        warnings,
    };
    writer.close(sink).await?;
    Ok(figures)
}

async fn load_nps(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
) -> anyhow::Result<LoadFigures> {
    // One row per source and UTC day: a rerun the same day replaces that day's row and leaves
    // the history of earlier days alone.
    let day = Utc::now().date_naive();
    let mut writer = Writer::open(sink, &NPS_SCORE, request.source_name, request.run_id).await?;
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
            vec![vec![
                day.into(),
                nps.nps.into(),
                nps.promoters.into(),
                nps.passives.into(),
                nps.detractors.into(),
                nps.promoters_count.into(),
                nps.passives_count.into(),
                nps.detractors_count.into(),
                nps.total_responses.into(),
            ]],
        )
        .await?;
    let figures = LoadFigures {
        rows: writer.rows,
        pages: writer.pages,
        warnings: Vec::new(),
    };
    writer.close(sink).await?;
    Ok(figures)
}
