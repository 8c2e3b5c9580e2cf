//! Retarus usage detail records (UDRs): five reports, one table each, loaded per customer id.
//!
//! Each report is read with page/size paging (`sort: ASC` on the report's filter timestamp, so a
//! closed window pages stably) until `hasMoreElements` is false. The window's rows are the ones
//! whose *filter timestamp* lies in it — the column the vendor filters `datePeriod` on
//! (`keyTimestamp` for fax, `receivedTs` for SMS in, `deliveryProcessedTs` for SMS out,
//! `usageCreationTime` for e-mail) — so deleting by that column and reloading replaces exactly
//! what the vendor now serves for the window.

use anyhow::Context;
use chrono::Utc;
use graphql_client::GraphQLQuery;

use crate::catalog::Dataset;
use crate::datasets::rows::Row;
use crate::datasets::sink::{Replace, SeenInLoad, Sink, TableSpec, Writer};
use crate::datasets::{LoadFigures, LoadRequest, ScopeTarget, Tuning};
use crate::executor::{Executor, ScopeHeader, Service};
use crate::failure::Failure;

/// The `DateTime` scalar as the generated code sees it.
type DateTime = chrono::DateTime<Utc>;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/retarus.graphql",
    query_path = "queries/retarus/fax_in_udr.graphql",
    response_derives = "Debug"
)]
pub struct FaxInUdr;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/retarus.graphql",
    query_path = "queries/retarus/fax_out_udr.graphql",
    response_derives = "Debug"
)]
pub struct FaxOutUdr;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/retarus.graphql",
    query_path = "queries/retarus/sms_in_udr.graphql",
    response_derives = "Debug"
)]
pub struct SmsInUdr;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/retarus.graphql",
    query_path = "queries/retarus/sms_out_udr.graphql",
    response_derives = "Debug"
)]
pub struct SmsOutUdr;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schemas/retarus.graphql",
    query_path = "queries/retarus/transactional_email_udr.graphql",
    response_derives = "Debug"
)]
pub struct TransactionalEmailUdr;

pub(crate) static FAX_IN: TableSpec = TableSpec {
    table: "retarus.fax_in_udr",
    columns: &[
        "customer_id",
        "fax_id",
        "key_timestamp",
        "accounting_service",
        "all_pages",
        "archive_purge_at",
        "archiving_status",
        "baud_rate",
        "billing_code",
        "call_connected_at",
        "called_country",
        "called_cs_id",
        "called_number",
        "called_number_display",
        "calling_number",
        "calling_ts_id",
        "call_started_at",
        "confirmed_pages",
        "record_customer_id",
        "delivery_recipients",
        "delivery_sender",
        "delivery_sender_user",
        "discarded_pages",
        "doc_mime_type",
        "document_delivery_status",
        "fax_file_size",
        "fax_transmit_status",
        "recipients_count",
        "resolution",
        "secondary_delivery_recipients",
        "virtual_pages_billed",
    ],
    key: &["customer_id", "fax_id"],
    scope_column: Some("customer_id"),
    window_column: Some("key_timestamp"),
};

pub(crate) static FAX_OUT: TableSpec = TableSpec {
    table: "retarus.fax_out_udr",
    columns: &[
        "customer_id",
        "fax_id",
        "key_timestamp",
        "job_id",
        "account_id",
        "account_name",
        "account_server_id",
        "account_service",
        "attempt_pages",
        "attempt_seq_no",
        "baud_rate",
        "billed_country",
        "call_connected_at",
        "call_duration_ms",
        "called_country",
        "called_cs_id",
        "called_number",
        "called_zone",
        "call_ended_at",
        "calling_ts_id",
        "call_invite_at",
        "doc_pages",
        "fax_customer_ref",
        "job_archive_purge_at",
        "job_billing_code",
        "job_billing_info",
        "job_customer_id",
        "job_customer_ref",
        "job_customer_resolution",
        "job_customer_start_fax_at",
        "job_customer_tags",
        "job_express",
        "job_personalized",
        "job_submission_dc",
        "job_submitted_at",
        "last_attempt_ended_at",
        "last_attempt_seq_no",
        "max_page_transmitted",
        "processing_final_at",
        "status_code",
        "status_name",
        "status_reason",
        "sum_call_durations_ms",
        "sum_pages_transmitted",
        "time_to_first_dial_ms",
        "virtual_pages_billed",
    ],
    key: &["customer_id", "fax_id"],
    scope_column: Some("customer_id"),
    window_column: Some("key_timestamp"),
};

pub(crate) static SMS_IN: TableSpec = TableSpec {
    table: "retarus.sms_in_udr",
    columns: &[
        "customer_id",
        "sms_id",
        "received_ts",
        "correlated_job_id",
        "correlated_tracking_id",
        "tracking_id",
        "correlated_sms_id",
        "data_center",
        "record_customer_id",
        "correlated_service",
        "correlated_service_account",
        "billing_code",
        "encoding",
        "sender",
        "recipient",
        "sender_country_code_iso3",
        "recipient_country_code_iso3",
        "keyword",
        "number_of_parts",
        "plaintext_actions",
        "message_content",
    ],
    key: &["customer_id", "sms_id"],
    scope_column: Some("customer_id"),
    window_column: Some("received_ts"),
};

pub(crate) static SMS_OUT: TableSpec = TableSpec {
    table: "retarus.sms_out_udr",
    columns: &[
        "customer_id",
        "sms_id",
        "delivery_processed_ts",
        "request_id",
        "job_id",
        "tracking_id",
        "reference",
        "recipient_reference",
        "data_center",
        "record_customer_id",
        "service",
        "service_account",
        "service_version",
        "billing_code",
        "status_requests",
        "flash",
        "encoding",
        "express",
        "personalized",
        "src",
        "recipient",
        "recipient_country_code",
        "recipient_type",
        "number_of_parts",
        "process_status",
        "status_code",
        "status",
        "number_schedule_ts",
        "number_delivery_ts",
        "number_status_ts",
        "number_final_ts",
        "job_final_ts",
    ],
    key: &["customer_id", "sms_id"],
    scope_column: Some("customer_id"),
    window_column: Some("delivery_processed_ts"),
};

pub(crate) static EMAIL: TableSpec = TableSpec {
    table: "retarus.transactional_email_udr",
    columns: &[
        "customer_id",
        "meta_id",
        "usage_creation_time",
        "meta_version",
        "meta_creation_time",
        "record_customer_id",
        "meta_entry_interface",
        "meta_processing_domain",
        "meta_data_center",
        "meta_environment",
        "job_id",
        "cost_center",
        "user_id",
        "campaign",
        "usage_id",
        "usage_type",
        "usage_msg_from",
        "usage_msg_from_domain",
        "usage_msg_to",
        "usage_msg_to_domain",
        "usage_msg_size",
        "usage_size_unit",
        "usage_status",
        "usage_sub_status",
        "usage_status_details",
        "usage_status_code",
        "usage_reference",
        "usage_correlation_id",
    ],
    key: &["customer_id", "meta_id"],
    scope_column: Some("customer_id"),
    window_column: Some("usage_creation_time"),
};

pub(crate) fn table(dataset: Dataset) -> Option<&'static TableSpec> {
    Some(match dataset {
        Dataset::FaxInUdr => &FAX_IN,
        Dataset::FaxOutUdr => &FAX_OUT,
        Dataset::SmsInUdr => &SMS_IN,
        Dataset::SmsOutUdr => &SMS_OUT,
        Dataset::TransactionalEmailUdr => &EMAIL,
        _ => return None,
    })
}

/// One page as the report returns it: its records and `hasMoreElements`.
pub(crate) type Page<R> = (Vec<Option<R>>, Option<bool>);

/// One report: how to ask for a page and how its records map to rows.
pub(crate) trait Report: GraphQLQuery {
    type Record;
    fn variables(customer: &str, from: DateTime, to: DateTime, page: i64, size: i64) -> Self::Variables;
    /// The page's records and `hasMoreElements`; `None` when the report itself came back null.
    fn page(data: Self::ResponseData) -> Option<Page<Self::Record>>;
    /// The record's filter timestamp (what the window applies to).
    fn filter_time(record: &Self::Record) -> Option<DateTime>;
    /// The row, `customer` being the scope's customer id. `filter_time` is known to be `Some`.
    fn row(customer: &str, record: Self::Record) -> Row;
}

macro_rules! report_paging {
    ($query:ident, $module:ident, $field:ident, $result:ident, $content:ident) => {
        fn variables(
            customer: &str,
            from: DateTime,
            to: DateTime,
            page: i64,
            size: i64,
        ) -> $module::Variables {
            $module::Variables {
                customer_id: customer.to_owned(),
                from,
                to,
                page,
                size,
            }
        }
        fn page(data: $module::ResponseData) -> Option<Page<$module::$content>> {
            data.$field
                .map(|page: $module::$result| (page.content.unwrap_or_default(), page.has_more_elements))
        }
    };
}

impl Report for FaxInUdr {
    type Record = fax_in_udr::FaxInUdrFaxInUdrReportContent;
    report_paging!(
        FaxInUdr,
        fax_in_udr,
        fax_in_udr_report,
        FaxInUdrFaxInUdrReport,
        FaxInUdrFaxInUdrReportContent
    );
    fn filter_time(record: &Self::Record) -> Option<DateTime> {
        record.key_timestamp
    }
    fn row(customer: &str, r: Self::Record) -> Row {
        vec![
            customer.into(),
            r.fax_id.into(),
            r.key_timestamp.into(),
            r.accounting_service.into(),
            r.all_pages.into(),
            r.archive_purge_at.into(),
            r.archiving_status.into(),
            r.baud_rate.into(),
            r.billing_code.into(),
            r.call_connected_at.into(),
            r.called_country.into(),
            r.called_cs_id.into(),
            r.called_number.into(),
            r.called_number_display.into(),
            r.calling_number.into(),
            r.calling_ts_id.into(),
            r.call_started_at.into(),
            r.confirmed_pages.into(),
            r.customer_id.into(),
            r.delivery_recipients.into(),
            r.delivery_sender.into(),
            r.delivery_sender_user.into(),
            r.discarded_pages.into(),
            r.doc_mime_type.into(),
            r.document_delivery_status.into(),
            r.fax_file_size.into(),
            r.fax_transmit_status.into(),
            r.recipients_count.into(),
            r.resolution.into(),
            r.secondary_delivery_recipients.into(),
            r.virtual_pages_billed.into(),
        ]
    }
}

impl Report for FaxOutUdr {
    type Record = fax_out_udr::FaxOutUdrFaxOutUdrReportContent;
    report_paging!(
        FaxOutUdr,
        fax_out_udr,
        fax_out_udr_report,
        FaxOutUdrFaxOutUdrReport,
        FaxOutUdrFaxOutUdrReportContent
    );
    fn filter_time(record: &Self::Record) -> Option<DateTime> {
        record.key_timestamp
    }
    fn row(customer: &str, r: Self::Record) -> Row {
        vec![
            customer.into(),
            r.fax_id.into(),
            r.key_timestamp.into(),
            r.job_id.into(),
            r.account_id.into(),
            r.account_name.into(),
            r.account_server_id.into(),
            r.account_service.into(),
            r.attempt_pages.into(),
            r.attempt_seq_no.into(),
            r.baud_rate.into(),
            r.billed_country.into(),
            r.call_connected_at.into(),
            r.call_duration.into(),
            r.called_country.into(),
            r.called_cs_id.into(),
            r.called_number.into(),
            r.called_zone.into(),
            r.call_ended_at.into(),
            r.calling_ts_id.into(),
            r.call_invite_at.into(),
            r.doc_pages.into(),
            r.fax_customer_ref.into(),
            r.job_archive_purge_at.into(),
            r.job_billing_code.into(),
            r.job_billing_info.into(),
            r.job_customer_id.into(),
            r.job_customer_ref.into(),
            r.job_customer_resolution.into(),
            r.job_customer_start_fax_at.into(),
            r.job_customer_tags.into(),
            r.job_express.into(),
            r.job_personalized.into(),
            r.job_submission_dc.into(),
            r.job_submitted_at.into(),
            r.last_attempt_ended_at.into(),
            r.last_attempt_seq_no.into(),
            r.max_page_transmitted.into(),
            r.processing_final_at.into(),
            r.status_code.into(),
            r.status_name.into(),
            r.status_reason.into(),
            r.sum_call_durations.into(),
            r.sum_pages_transmitted.into(),
            r.time_to_first_dial.into(),
            r.virtual_pages_billed.into(),
        ]
    }
}

impl Report for SmsInUdr {
    type Record = sms_in_udr::SmsInUdrSmsInUdrReportContent;
    report_paging!(
        SmsInUdr,
        sms_in_udr,
        sms_in_udr_report,
        SmsInUdrSmsInUdrReport,
        SmsInUdrSmsInUdrReportContent
    );
    fn filter_time(record: &Self::Record) -> Option<DateTime> {
        record.received_ts
    }
    fn row(customer: &str, r: Self::Record) -> Row {
        vec![
            customer.into(),
            r.sms_id.into(),
            r.received_ts.into(),
            r.correlated_job_id.into(),
            r.correlated_tracking_id.into(),
            r.tracking_id.into(),
            r.correlated_sms_id.into(),
            r.data_center.into(),
            r.customer_id.into(),
            r.correlated_service.into(),
            r.correlated_service_account.into(),
            r.billing_code.into(),
            r.encoding.into(),
            r.sender.into(),
            r.recipient.into(),
            r.sender_country_code_iso3.into(),
            r.recipient_country_code_iso3.into(),
            r.keyword.into(),
            r.number_of_parts.into(),
            r.plaintext_actions.into(),
            r.message_content.into(),
        ]
    }
}

impl Report for SmsOutUdr {
    type Record = sms_out_udr::SmsOutUdrSmsOutUdrReportContent;
    report_paging!(
        SmsOutUdr,
        sms_out_udr,
        sms_out_udr_report,
        SmsOutUdrSmsOutUdrReport,
        SmsOutUdrSmsOutUdrReportContent
    );
    fn filter_time(record: &Self::Record) -> Option<DateTime> {
        record.delivery_processed_ts
    }
    fn row(customer: &str, r: Self::Record) -> Row {
        vec![
            customer.into(),
            r.sms_id.into(),
            r.delivery_processed_ts.into(),
            r.request_id.into(),
            r.job_id.into(),
            r.tracking_id.into(),
            r.reference.into(),
            r.recipient_reference.into(),
            r.data_center.into(),
            r.customer_id.into(),
            r.service.into(),
            r.service_account.into(),
            r.service_version.into(),
            r.billing_code.into(),
            r.status_requests.into(),
            r.flash.into(),
            r.encoding.into(),
            r.express.into(),
            r.personalized.into(),
            r.src.into(),
            r.recipient.into(),
            r.recipient_country_code.into(),
            r.recipient_type.into(),
            r.number_of_parts.into(),
            r.process_status.into(),
            r.status_code.into(),
            r.status.into(),
            r.number_schedule_ts.into(),
            r.number_delivery_ts.into(),
            r.number_status_ts.into(),
            r.number_final_ts.into(),
            r.job_final_ts.into(),
        ]
    }
}

impl Report for TransactionalEmailUdr {
    type Record = transactional_email_udr::TransactionalEmailUdrTransactionalEmailUdrReportContent;
    report_paging!(
        TransactionalEmailUdr,
        transactional_email_udr,
        transactional_email_udr_report,
        TransactionalEmailUdrTransactionalEmailUdrReport,
        TransactionalEmailUdrTransactionalEmailUdrReportContent
    );
    fn filter_time(record: &Self::Record) -> Option<DateTime> {
        record.usage_creation_time
    }
    fn row(customer: &str, r: Self::Record) -> Row {
        vec![
            customer.into(),
            r.meta_id.into(),
            r.usage_creation_time.into(),
            r.meta_version.into(),
            r.meta_creation_time.into(),
            r.customer_id.into(),
            r.meta_entry_interface.into(),
            r.meta_processing_domain.into(),
            r.meta_data_center.into(),
            r.meta_environment.into(),
            r.job_id.into(),
            r.cost_center.into(),
            r.user_id.into(),
            r.campaign.into(),
            r.usage_id.into(),
            r.usage_type.into(),
            r.usage_msg_from.into(),
            r.usage_msg_from_domain.into(),
            r.usage_msg_to.into(),
            r.usage_msg_to_domain.into(),
            r.usage_msg_size.into(),
            r.usage_size_unit.into(),
            r.usage_status.into(),
            r.usage_sub_status.into(),
            r.usage_status_details.into(),
            r.usage_status_code.into(),
            r.usage_reference.into(),
            r.usage_correlation_id.into(),
        ]
    }
}

pub(crate) async fn load(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    match request.dataset.id {
        Dataset::FaxInUdr => load_report::<FaxInUdr>(exec, sink, request, &FAX_IN, tuning).await,
        Dataset::FaxOutUdr => load_report::<FaxOutUdr>(exec, sink, request, &FAX_OUT, tuning).await,
        Dataset::SmsInUdr => load_report::<SmsInUdr>(exec, sink, request, &SMS_IN, tuning).await,
        Dataset::SmsOutUdr => load_report::<SmsOutUdr>(exec, sink, request, &SMS_OUT, tuning).await,
        Dataset::TransactionalEmailUdr => {
            load_report::<TransactionalEmailUdr>(exec, sink, request, &EMAIL, tuning).await
        }
        other => anyhow::bail!("retarus has no dataset {other}"),
    }
}

async fn load_report<R: Report>(
    exec: &Executor,
    sink: &mut Sink,
    request: &LoadRequest<'_>,
    spec: &'static TableSpec,
    tuning: &Tuning,
) -> anyhow::Result<LoadFigures> {
    let ScopeTarget::Customer(customer) = request.scope else {
        anyhow::bail!(
            "a Retarus dataset is loaded per customer, not for {}",
            request.scope.describe()
        );
    };
    let window = request
        .window
        .context("a Retarus dataset needs a window (they are never snapshots)")?;
    if let Some(span) = request.dataset.max_span
        && window.len() > span
    {
        anyhow::bail!(
            "window {window} is longer than the {} days Retarus accepts; split it first",
            span.num_days()
        );
    }
    let size = tuning
        .retarus_page_size
        .clamp(1, crate::datasets::RETARUS_MAX_PAGE_SIZE);
    let mut writer = Writer::open(sink, spec, request.source_name, request.run_id).await?;
    writer
        .replace(
            sink,
            &Replace::Instants {
                scope: Some(customer.clone()),
                start: window.start,
                end: window.end,
            },
        )
        .await?;
    let mut warnings = Vec::new();
    let mut untimed = 0usize;
    let mut page = 0i64;
    let mut seen = SeenInLoad::default();
    loop {
        let what = || {
            format!(
                "fetching page {} of retarus.{} for customer {customer}",
                page + 1,
                request.dataset.name
            )
        };
        let variables = R::variables(customer, window.start, window.end, page, size);
        let outcome = exec
            .execute::<R>(request.call, Service::Default, &ScopeHeader::None, variables)
            .await
            .with_context(what)?;
        warnings.extend(outcome.warnings);
        writer.pages += 1;
        let Some((content, more)) = R::page(outcome.data) else {
            return Err(Failure::invalid_answer(format!("{}: the report came back null", what())).into());
        };
        let fetched = content.len();
        let mapping = std::time::Instant::now();
        let mapped: Vec<(bool, Row)> = content
            .into_iter()
            .flatten()
            .map(|record| (R::filter_time(&record).is_some(), R::row(customer, record)))
            .collect();
        seen.check_records(spec, mapped.iter().map(|(_, row)| row))
            .with_context(what)?;
        let mut rows = Vec::with_capacity(fetched);
        for (timed, row) in mapped {
            if !timed {
                // Without its filter timestamp a record belongs to no window: it could never be
                // replaced or removed, so it is not stored.
                untimed += 1;
                continue;
            }
            rows.push(row);
        }
        crate::stages::Stage::Map.since(mapping);
        writer.write(sink, rows).await.with_context(what)?;
        match more {
            Some(true) if fetched > 0 => page += 1,
            // Stopping would keep part of the window as if it were all of it; following an
            // empty page could go on for ever. The window fails and keeps its previous rows.
            Some(true) => {
                return Err(Failure::invalid_answer(format!(
                    "page {} of {} was empty but said more elements follow; the load stopped and nothing of it is kept",
                    page + 1,
                    spec.table
                ))
                .into());
            }
            // `None`: the vendor did not say; an absent flag cannot justify another request.
            Some(false) | None => break,
        }
    }
    if untimed > 0 {
        warnings.push(format!(
            "{untimed} record(s) without their filter timestamp were skipped"
        ));
    }
    let figures = LoadFigures {
        rows: writer.rows,
        pages: writer.pages,
        warnings,
    };
    writer.close(sink).await?;
    Ok(figures)
}
