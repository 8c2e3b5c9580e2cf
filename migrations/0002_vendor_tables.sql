-- Vendor tables: one schema per vendor, typed columns, primary keys on the natural keys
-- (always led by `source`, the configured account name), `_run_id`/`_loaded_at` on every row,
-- and an analyst-facing comment on every table and column. Loads replace rows by the key and
-- by each table's window column (see src/datasets).

CREATE SCHEMA IF NOT EXISTS retarus;
COMMENT ON SCHEMA retarus IS 'Retarus External Reporting Service: usage detail records (UDRs) of fax, SMS and transactional e-mail, one table per report. All timestamps are UTC. Each load replaces one customer''s window on the report''s filter timestamp.';
CREATE SCHEMA IF NOT EXISTS roubler;
COMMENT ON SCHEMA roubler IS 'Roubler workforce management: locations and employees (snapshots per company), daily sales per location (local days), timesheets and shifts (by start time).';
CREATE SCHEMA IF NOT EXISTS altrata;
COMMENT ON SCHEMA altrata IS 'Altrata: events and profiles of the people and organisations on the source''s watch-list (snapshots).';
CREATE SCHEMA IF NOT EXISTS retently;
COMMENT ON SCHEMA retently IS 'Retently NPS surveys: customers and feedback (by creation time), companies, campaigns and a daily NPS snapshot.';

CREATE TABLE retarus.fax_in_udr (
    source                        text NOT NULL,
    customer_id                   text NOT NULL,
    fax_id                        text NOT NULL,
    key_timestamp                 timestamptz NOT NULL,
    accounting_service            text,
    all_pages                     integer,
    archive_purge_at              timestamptz,
    archiving_status              text,
    baud_rate                     integer,
    billing_code                  text,
    call_connected_at             timestamptz,
    called_country                text,
    called_cs_id                  text,
    called_number                 text,
    called_number_display         text,
    calling_number                text,
    calling_ts_id                 text,
    call_started_at               timestamptz,
    confirmed_pages               integer,
    record_customer_id            text,
    delivery_recipients           text,
    delivery_sender               text,
    delivery_sender_user          text,
    discarded_pages               integer,
    doc_mime_type                 text,
    document_delivery_status      text,
    fax_file_size                 bigint,
    fax_transmit_status           text,
    recipients_count              integer,
    resolution                    text,
    secondary_delivery_recipients text,
    virtual_pages_billed          integer,
    _run_id                       bigint NOT NULL,
    _loaded_at                    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, customer_id, fax_id)
);
CREATE INDEX fax_in_udr_window ON retarus.fax_in_udr (source, customer_id, key_timestamp);
COMMENT ON TABLE retarus.fax_in_udr IS 'Inbound fax usage records (faxInUdrReport), one row per received fax. Window column: key_timestamp.';
COMMENT ON COLUMN retarus.fax_in_udr.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retarus.fax_in_udr.customer_id IS 'Retarus customer account id the report was requested for (customerId).';
COMMENT ON COLUMN retarus.fax_in_udr.fax_id IS 'Fax id (faxId), unique per customer.';
COMMENT ON COLUMN retarus.fax_in_udr.key_timestamp IS 'The timestamp the report filters on (keyTimestamp); loads replace rows by this column.';
COMMENT ON COLUMN retarus.fax_in_udr.accounting_service IS 'Accounting service the fax was billed under.';
COMMENT ON COLUMN retarus.fax_in_udr.all_pages IS 'Pages of the received document.';
COMMENT ON COLUMN retarus.fax_in_udr.archive_purge_at IS 'When the archived document is purged.';
COMMENT ON COLUMN retarus.fax_in_udr.archiving_status IS 'Archiving status of the document.';
COMMENT ON COLUMN retarus.fax_in_udr.baud_rate IS 'Transmission speed in bit/s.';
COMMENT ON COLUMN retarus.fax_in_udr.billing_code IS 'Billing code.';
COMMENT ON COLUMN retarus.fax_in_udr.call_connected_at IS 'When the call was connected.';
COMMENT ON COLUMN retarus.fax_in_udr.called_country IS 'Country of the called (receiving) number.';
COMMENT ON COLUMN retarus.fax_in_udr.called_cs_id IS 'Called station id (CSID).';
COMMENT ON COLUMN retarus.fax_in_udr.called_number IS 'The receiving fax number.';
COMMENT ON COLUMN retarus.fax_in_udr.called_number_display IS 'The receiving number as displayed.';
COMMENT ON COLUMN retarus.fax_in_udr.calling_number IS 'The sender''s number.';
COMMENT ON COLUMN retarus.fax_in_udr.calling_ts_id IS 'Transmitting station id (TSID) of the sender.';
COMMENT ON COLUMN retarus.fax_in_udr.call_started_at IS 'When the call started.';
COMMENT ON COLUMN retarus.fax_in_udr.confirmed_pages IS 'Pages received and confirmed.';
COMMENT ON COLUMN retarus.fax_in_udr.record_customer_id IS 'Customer id as stated in the record (customerId).';
COMMENT ON COLUMN retarus.fax_in_udr.delivery_recipients IS 'Where the fax was delivered (e-mail addresses).';
COMMENT ON COLUMN retarus.fax_in_udr.delivery_sender IS 'Sender address of the delivery.';
COMMENT ON COLUMN retarus.fax_in_udr.delivery_sender_user IS 'Sender user of the delivery.';
COMMENT ON COLUMN retarus.fax_in_udr.discarded_pages IS 'Pages discarded.';
COMMENT ON COLUMN retarus.fax_in_udr.doc_mime_type IS 'MIME type of the delivered document.';
COMMENT ON COLUMN retarus.fax_in_udr.document_delivery_status IS 'Delivery status of the document, e.g. DELIVERED.';
COMMENT ON COLUMN retarus.fax_in_udr.fax_file_size IS 'Size of the received document in bytes.';
COMMENT ON COLUMN retarus.fax_in_udr.fax_transmit_status IS 'Transmission status, e.g. OK.';
COMMENT ON COLUMN retarus.fax_in_udr.recipients_count IS 'Number of delivery recipients.';
COMMENT ON COLUMN retarus.fax_in_udr.resolution IS 'Fax resolution (FINE, STANDARD).';
COMMENT ON COLUMN retarus.fax_in_udr.secondary_delivery_recipients IS 'Secondary delivery recipients (often empty).';
COMMENT ON COLUMN retarus.fax_in_udr.virtual_pages_billed IS 'Pages billed.';
COMMENT ON COLUMN retarus.fax_in_udr._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retarus.fax_in_udr._loaded_at IS 'When this row was last written.';

CREATE TABLE retarus.fax_out_udr (
    source                    text NOT NULL,
    customer_id               text NOT NULL,
    fax_id                    text NOT NULL,
    key_timestamp             timestamptz NOT NULL,
    job_id                    text,
    account_id                text,
    account_name              text,
    account_server_id         text,
    account_service           text,
    attempt_pages             integer,
    attempt_seq_no            integer,
    baud_rate                 integer,
    billed_country            text,
    call_connected_at         timestamptz,
    call_duration_ms          bigint,
    called_country            text,
    called_cs_id              text,
    called_number             text,
    called_zone               text,
    call_ended_at             timestamptz,
    calling_ts_id             text,
    call_invite_at            timestamptz,
    doc_pages                 integer,
    fax_customer_ref          text,
    job_archive_purge_at      timestamptz,
    job_billing_code          text,
    job_billing_info          text,
    job_customer_id           text,
    job_customer_ref          text,
    job_customer_resolution   text,
    job_customer_start_fax_at timestamptz,
    job_customer_tags         text,
    job_express               boolean,
    job_personalized          boolean,
    job_submission_dc         text,
    job_submitted_at          timestamptz,
    last_attempt_ended_at     timestamptz,
    last_attempt_seq_no       integer,
    max_page_transmitted      integer,
    processing_final_at       timestamptz,
    status_code               text,
    status_name               text,
    status_reason             text,
    sum_call_durations_ms     bigint,
    sum_pages_transmitted     integer,
    time_to_first_dial_ms     bigint,
    virtual_pages_billed      integer,
    _run_id                   bigint NOT NULL,
    _loaded_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, customer_id, fax_id)
);
CREATE INDEX fax_out_udr_window ON retarus.fax_out_udr (source, customer_id, key_timestamp);
COMMENT ON TABLE retarus.fax_out_udr IS 'Outbound fax usage records (faxOutUdrReport), one row per fax with its last transmission attempt. Window column: key_timestamp.';
COMMENT ON COLUMN retarus.fax_out_udr.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retarus.fax_out_udr.customer_id IS 'Retarus customer account id the report was requested for (customerId).';
COMMENT ON COLUMN retarus.fax_out_udr.fax_id IS 'Fax id (faxId), unique per customer.';
COMMENT ON COLUMN retarus.fax_out_udr.key_timestamp IS 'The timestamp the report filters on (keyTimestamp); loads replace rows by this column.';
COMMENT ON COLUMN retarus.fax_out_udr.job_id IS 'Job the fax belongs to.';
COMMENT ON COLUMN retarus.fax_out_udr.account_id IS 'Retarus account id.';
COMMENT ON COLUMN retarus.fax_out_udr.account_name IS 'Retarus account name.';
COMMENT ON COLUMN retarus.fax_out_udr.account_server_id IS 'Fax server that handled the job.';
COMMENT ON COLUMN retarus.fax_out_udr.account_service IS 'Service, e.g. FAX.';
COMMENT ON COLUMN retarus.fax_out_udr.attempt_pages IS 'Pages sent in the last attempt.';
COMMENT ON COLUMN retarus.fax_out_udr.attempt_seq_no IS 'Number of the last attempt.';
COMMENT ON COLUMN retarus.fax_out_udr.baud_rate IS 'Transmission speed in bit/s.';
COMMENT ON COLUMN retarus.fax_out_udr.billed_country IS 'Country billed.';
COMMENT ON COLUMN retarus.fax_out_udr.call_connected_at IS 'When the last call was connected; NULL if it never connected.';
COMMENT ON COLUMN retarus.fax_out_udr.call_duration_ms IS 'Duration of the last call in milliseconds (callDuration).';
COMMENT ON COLUMN retarus.fax_out_udr.called_country IS 'Country of the called number.';
COMMENT ON COLUMN retarus.fax_out_udr.called_cs_id IS 'Called station id (CSID).';
COMMENT ON COLUMN retarus.fax_out_udr.called_number IS 'The number dialled.';
COMMENT ON COLUMN retarus.fax_out_udr.called_zone IS 'Tariff zone, e.g. NATIONAL or INTERNATIONAL.';
COMMENT ON COLUMN retarus.fax_out_udr.call_ended_at IS 'When the last call ended.';
COMMENT ON COLUMN retarus.fax_out_udr.calling_ts_id IS 'Transmitting station id (TSID).';
COMMENT ON COLUMN retarus.fax_out_udr.call_invite_at IS 'When the last call was initiated.';
COMMENT ON COLUMN retarus.fax_out_udr.doc_pages IS 'Pages of the document.';
COMMENT ON COLUMN retarus.fax_out_udr.fax_customer_ref IS 'Customer reference of the fax.';
COMMENT ON COLUMN retarus.fax_out_udr.job_archive_purge_at IS 'When the job''s archive is purged.';
COMMENT ON COLUMN retarus.fax_out_udr.job_billing_code IS 'Billing code of the job.';
COMMENT ON COLUMN retarus.fax_out_udr.job_billing_info IS 'Billing info of the job.';
COMMENT ON COLUMN retarus.fax_out_udr.job_customer_id IS 'Customer id of the job (jobCustomerId).';
COMMENT ON COLUMN retarus.fax_out_udr.job_customer_ref IS 'Customer reference of the job.';
COMMENT ON COLUMN retarus.fax_out_udr.job_customer_resolution IS 'Requested resolution.';
COMMENT ON COLUMN retarus.fax_out_udr.job_customer_start_fax_at IS 'Requested start time of the job.';
COMMENT ON COLUMN retarus.fax_out_udr.job_customer_tags IS 'Tags of the job, comma-separated (often empty).';
COMMENT ON COLUMN retarus.fax_out_udr.job_express IS 'Whether the job was sent express.';
COMMENT ON COLUMN retarus.fax_out_udr.job_personalized IS 'Whether the job was personalised.';
COMMENT ON COLUMN retarus.fax_out_udr.job_submission_dc IS 'Data centre the job was submitted to.';
COMMENT ON COLUMN retarus.fax_out_udr.job_submitted_at IS 'When the job was submitted.';
COMMENT ON COLUMN retarus.fax_out_udr.last_attempt_ended_at IS 'When the last attempt ended.';
COMMENT ON COLUMN retarus.fax_out_udr.last_attempt_seq_no IS 'Number of the last attempt.';
COMMENT ON COLUMN retarus.fax_out_udr.max_page_transmitted IS 'Highest page transmitted.';
COMMENT ON COLUMN retarus.fax_out_udr.processing_final_at IS 'When processing finished.';
COMMENT ON COLUMN retarus.fax_out_udr.status_code IS 'Status code as text, e.g. 0 for OK.';
COMMENT ON COLUMN retarus.fax_out_udr.status_name IS 'Status, e.g. OK, BUSY, NO_ANSWER.';
COMMENT ON COLUMN retarus.fax_out_udr.status_reason IS 'Reason for a failure (empty when OK).';
COMMENT ON COLUMN retarus.fax_out_udr.sum_call_durations_ms IS 'Sum of all attempts'' call durations in milliseconds.';
COMMENT ON COLUMN retarus.fax_out_udr.sum_pages_transmitted IS 'Pages transmitted over all attempts.';
COMMENT ON COLUMN retarus.fax_out_udr.time_to_first_dial_ms IS 'Milliseconds from submission to the first dial.';
COMMENT ON COLUMN retarus.fax_out_udr.virtual_pages_billed IS 'Pages billed.';
COMMENT ON COLUMN retarus.fax_out_udr._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retarus.fax_out_udr._loaded_at IS 'When this row was last written.';

CREATE TABLE retarus.sms_in_udr (
    source                      text NOT NULL,
    customer_id                 text NOT NULL,
    sms_id                      text NOT NULL,
    received_ts                 timestamptz NOT NULL,
    correlated_job_id           text,
    correlated_tracking_id      text,
    tracking_id                 text,
    correlated_sms_id           text,
    data_center                 text,
    record_customer_id          text,
    correlated_service          text,
    correlated_service_account  text,
    billing_code                text,
    encoding                    text,
    sender                      text,
    recipient                   text,
    sender_country_code_iso3    text,
    recipient_country_code_iso3 text,
    keyword                     text,
    number_of_parts             integer,
    plaintext_actions           text,
    message_content             text,
    _run_id                     bigint NOT NULL,
    _loaded_at                  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, customer_id, sms_id)
);
CREATE INDEX sms_in_udr_window ON retarus.sms_in_udr (source, customer_id, received_ts);
COMMENT ON TABLE retarus.sms_in_udr IS 'Inbound SMS usage records (smsInUdrReport). Window column: received_ts.';
COMMENT ON COLUMN retarus.sms_in_udr.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retarus.sms_in_udr.customer_id IS 'Retarus customer account id the report was requested for (customerId).';
COMMENT ON COLUMN retarus.sms_in_udr.sms_id IS 'SMS id (smsId).';
COMMENT ON COLUMN retarus.sms_in_udr.received_ts IS 'When the SMS was received: the timestamp the report filters on; loads replace rows by this column.';
COMMENT ON COLUMN retarus.sms_in_udr.correlated_job_id IS 'Outbound SMS job this message answers, if correlated.';
COMMENT ON COLUMN retarus.sms_in_udr.correlated_tracking_id IS 'Tracking id of the correlated outbound SMS.';
COMMENT ON COLUMN retarus.sms_in_udr.tracking_id IS 'Tracking id (the vendor pads it with spaces; stored trimmed).';
COMMENT ON COLUMN retarus.sms_in_udr.correlated_sms_id IS 'Id of the correlated outbound SMS.';
COMMENT ON COLUMN retarus.sms_in_udr.data_center IS 'Data centre that received the message.';
COMMENT ON COLUMN retarus.sms_in_udr.record_customer_id IS 'Customer id as stated in the record (customerId).';
COMMENT ON COLUMN retarus.sms_in_udr.correlated_service IS 'Service of the correlated outbound SMS.';
COMMENT ON COLUMN retarus.sms_in_udr.correlated_service_account IS 'Service account of the correlated outbound SMS.';
COMMENT ON COLUMN retarus.sms_in_udr.billing_code IS 'Billing code.';
COMMENT ON COLUMN retarus.sms_in_udr.encoding IS 'Character encoding.';
COMMENT ON COLUMN retarus.sms_in_udr.sender IS 'Sender phone number.';
COMMENT ON COLUMN retarus.sms_in_udr.recipient IS 'Receiving number or short code.';
COMMENT ON COLUMN retarus.sms_in_udr.sender_country_code_iso3 IS 'Sender country (ISO 3166 alpha-3).';
COMMENT ON COLUMN retarus.sms_in_udr.recipient_country_code_iso3 IS 'Recipient country (ISO 3166 alpha-3).';
COMMENT ON COLUMN retarus.sms_in_udr.keyword IS 'Keyword recognised in the message, if any.';
COMMENT ON COLUMN retarus.sms_in_udr.number_of_parts IS 'Message parts.';
COMMENT ON COLUMN retarus.sms_in_udr.plaintext_actions IS 'Actions taken on the message.';
COMMENT ON COLUMN retarus.sms_in_udr.message_content IS 'Message text.';
COMMENT ON COLUMN retarus.sms_in_udr._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retarus.sms_in_udr._loaded_at IS 'When this row was last written.';

CREATE TABLE retarus.sms_out_udr (
    source                 text NOT NULL,
    customer_id            text NOT NULL,
    sms_id                 text NOT NULL,
    delivery_processed_ts  timestamptz NOT NULL,
    request_id             text,
    job_id                 text,
    tracking_id            text,
    reference              text,
    recipient_reference    text,
    data_center            text,
    record_customer_id     text,
    service                text,
    service_account        text,
    service_version        text,
    billing_code           text,
    status_requests        boolean,
    flash                  boolean,
    encoding               text,
    express                boolean,
    personalized           boolean,
    src                    text,
    recipient              text,
    recipient_country_code text,
    recipient_type         text,
    number_of_parts        integer,
    process_status         text,
    status_code            text,
    status                 text,
    number_schedule_ts     timestamptz,
    number_delivery_ts     timestamptz,
    number_status_ts       timestamptz,
    number_final_ts        timestamptz,
    job_final_ts           timestamptz,
    _run_id                bigint NOT NULL,
    _loaded_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, customer_id, sms_id)
);
CREATE INDEX sms_out_udr_window ON retarus.sms_out_udr (source, customer_id, delivery_processed_ts);
COMMENT ON TABLE retarus.sms_out_udr IS 'Outbound SMS usage records (smsOutUdrReport), one row per SMS. Window column: delivery_processed_ts.';
COMMENT ON COLUMN retarus.sms_out_udr.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retarus.sms_out_udr.customer_id IS 'Retarus customer account id the report was requested for (customerId).';
COMMENT ON COLUMN retarus.sms_out_udr.sms_id IS 'SMS id (smsId).';
COMMENT ON COLUMN retarus.sms_out_udr.delivery_processed_ts IS 'Processing timestamp of the SMS: the timestamp the report filters on (documented); loads replace rows by this column.';
COMMENT ON COLUMN retarus.sms_out_udr.request_id IS 'Request the SMS was sent with.';
COMMENT ON COLUMN retarus.sms_out_udr.job_id IS 'Job id.';
COMMENT ON COLUMN retarus.sms_out_udr.tracking_id IS 'Tracking id.';
COMMENT ON COLUMN retarus.sms_out_udr.reference IS 'Customer reference.';
COMMENT ON COLUMN retarus.sms_out_udr.recipient_reference IS 'Reference of the recipient.';
COMMENT ON COLUMN retarus.sms_out_udr.data_center IS 'Data centre.';
COMMENT ON COLUMN retarus.sms_out_udr.record_customer_id IS 'Customer id as stated in the record (customerId).';
COMMENT ON COLUMN retarus.sms_out_udr.service IS 'Service, e.g. SMS.';
COMMENT ON COLUMN retarus.sms_out_udr.service_account IS 'Service account.';
COMMENT ON COLUMN retarus.sms_out_udr.service_version IS 'API version used.';
COMMENT ON COLUMN retarus.sms_out_udr.billing_code IS 'Billing code.';
COMMENT ON COLUMN retarus.sms_out_udr.status_requests IS 'Whether delivery status notifications were requested.';
COMMENT ON COLUMN retarus.sms_out_udr.flash IS 'Whether sent as flash SMS.';
COMMENT ON COLUMN retarus.sms_out_udr.encoding IS 'Character encoding.';
COMMENT ON COLUMN retarus.sms_out_udr.express IS 'Whether sent express.';
COMMENT ON COLUMN retarus.sms_out_udr.personalized IS 'Whether personalised.';
COMMENT ON COLUMN retarus.sms_out_udr.src IS 'Sender id shown to the recipient.';
COMMENT ON COLUMN retarus.sms_out_udr.recipient IS 'Recipient phone number.';
COMMENT ON COLUMN retarus.sms_out_udr.recipient_country_code IS 'Recipient country code.';
COMMENT ON COLUMN retarus.sms_out_udr.recipient_type IS 'Recipient type, e.g. MOBILE.';
COMMENT ON COLUMN retarus.sms_out_udr.number_of_parts IS 'Message parts billed.';
COMMENT ON COLUMN retarus.sms_out_udr.process_status IS 'NULL or DONE.';
COMMENT ON COLUMN retarus.sms_out_udr.status_code IS 'Status code as text, e.g. 200.';
COMMENT ON COLUMN retarus.sms_out_udr.status IS 'NULL or SUC_ACC.';
COMMENT ON COLUMN retarus.sms_out_udr.number_schedule_ts IS 'When sending was scheduled.';
COMMENT ON COLUMN retarus.sms_out_udr.number_delivery_ts IS 'When the SMS was delivered.';
COMMENT ON COLUMN retarus.sms_out_udr.number_status_ts IS 'When the delivery status arrived.';
COMMENT ON COLUMN retarus.sms_out_udr.number_final_ts IS 'When the SMS reached its final state.';
COMMENT ON COLUMN retarus.sms_out_udr.job_final_ts IS 'When the job reached its final state.';
COMMENT ON COLUMN retarus.sms_out_udr._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retarus.sms_out_udr._loaded_at IS 'When this row was last written.';

CREATE TABLE retarus.transactional_email_udr (
    source                 text NOT NULL,
    customer_id            text NOT NULL,
    meta_id                text NOT NULL,
    usage_creation_time    timestamptz NOT NULL,
    meta_version           integer,
    meta_creation_time     timestamptz,
    record_customer_id     text,
    meta_entry_interface   text,
    meta_processing_domain text,
    meta_data_center       text,
    meta_environment       text,
    job_id                 text,
    cost_center            text,
    user_id                text,
    campaign               text,
    usage_id               text,
    usage_type             text,
    usage_msg_from         text,
    usage_msg_from_domain  text,
    usage_msg_to           text,
    usage_msg_to_domain    text,
    usage_msg_size         bigint,
    usage_size_unit        text,
    usage_status           text,
    usage_sub_status       text,
    usage_status_details   text,
    usage_status_code      text,
    usage_reference        text,
    usage_correlation_id   text,
    _run_id                bigint NOT NULL,
    _loaded_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, customer_id, meta_id)
);
CREATE INDEX transactional_email_udr_window ON retarus.transactional_email_udr (source, customer_id, usage_creation_time);
COMMENT ON TABLE retarus.transactional_email_udr IS 'Transactional e-mail usage records (transactionalEmailUdrReport), one row per message and recipient. Window column: usage_creation_time.';
COMMENT ON COLUMN retarus.transactional_email_udr.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retarus.transactional_email_udr.customer_id IS 'Retarus customer account id the report was requested for (customerId).';
COMMENT ON COLUMN retarus.transactional_email_udr.meta_id IS 'Record id (metaId).';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_creation_time IS 'When the usage was created: the timestamp the report filters on; loads replace rows by this column.';
COMMENT ON COLUMN retarus.transactional_email_udr.meta_version IS 'Record version.';
COMMENT ON COLUMN retarus.transactional_email_udr.meta_creation_time IS 'When the record was created.';
COMMENT ON COLUMN retarus.transactional_email_udr.record_customer_id IS 'Customer id as stated in the record (customerId).';
COMMENT ON COLUMN retarus.transactional_email_udr.meta_entry_interface IS 'Interface the message came in through (REST, SMTP).';
COMMENT ON COLUMN retarus.transactional_email_udr.meta_processing_domain IS 'Processing domain.';
COMMENT ON COLUMN retarus.transactional_email_udr.meta_data_center IS 'Data centre.';
COMMENT ON COLUMN retarus.transactional_email_udr.meta_environment IS 'Environment, e.g. PROD.';
COMMENT ON COLUMN retarus.transactional_email_udr.job_id IS 'Job id.';
COMMENT ON COLUMN retarus.transactional_email_udr.cost_center IS 'Cost centre.';
COMMENT ON COLUMN retarus.transactional_email_udr.user_id IS 'User that sent the message.';
COMMENT ON COLUMN retarus.transactional_email_udr.campaign IS 'Campaign name.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_id IS 'Usage id.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_type IS 'Usage type, e.g. EMAIL.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_msg_from IS 'Sender address.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_msg_from_domain IS 'Sender domain.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_msg_to IS 'Recipient address.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_msg_to_domain IS 'Recipient domain.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_msg_size IS 'Message size, in usage_size_unit.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_size_unit IS 'Unit of usage_msg_size, e.g. KB.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_status IS 'Delivery status, e.g. DELIVERED, BOUNCED, DEFERRED.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_sub_status IS 'Sub-status, e.g. HARD or SOFT bounce.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_status_details IS 'Status details (SMTP answer).';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_status_code IS 'Status code as text (SMTP code).';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_reference IS 'Customer reference.';
COMMENT ON COLUMN retarus.transactional_email_udr.usage_correlation_id IS 'Correlation id.';
COMMENT ON COLUMN retarus.transactional_email_udr._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retarus.transactional_email_udr._loaded_at IS 'When this row was last written.';

CREATE TABLE roubler.locations (
    source      text NOT NULL,
    company_id  text NOT NULL,
    location_id text NOT NULL,
    name        text,
    time_zone   text,
    rosterable  boolean,
    parent_id   text,
    _run_id     bigint NOT NULL,
    _loaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, company_id, location_id)
);
COMMENT ON TABLE roubler.locations IS 'Locations of each company (snapshot; a tree through parent_id). Each load replaces all rows of its company.';
COMMENT ON COLUMN roubler.locations.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN roubler.locations.company_id IS 'Roubler company id (X-Company-ID).';
COMMENT ON COLUMN roubler.locations.location_id IS 'Location id.';
COMMENT ON COLUMN roubler.locations.name IS 'Location name.';
COMMENT ON COLUMN roubler.locations.time_zone IS 'IANA time zone of the location, e.g. Australia/Brisbane; local days (location_sales.day) are in it.';
COMMENT ON COLUMN roubler.locations.rosterable IS 'Whether staff can be rostered at the location.';
COMMENT ON COLUMN roubler.locations.parent_id IS 'Parent location id; 0 for the root.';
COMMENT ON COLUMN roubler.locations._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN roubler.locations._loaded_at IS 'When this row was last written.';

CREATE TABLE roubler.employees (
    source               text NOT NULL,
    company_id           text NOT NULL,
    employee_id          text NOT NULL,
    full_name            text,
    work_email           text,
    status               text,
    rosterable           boolean,
    visible              boolean,
    person_mobile        text,
    person_email         text,
    person_date_of_birth date,
    location_id          text,
    location_name        text,
    position_id          text,
    position_name        text,
    start_date           date,
    terminated_at        timestamptz,
    modified_at          timestamptz,
    _run_id              bigint NOT NULL,
    _loaded_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, company_id, employee_id)
);
COMMENT ON TABLE roubler.employees IS 'Employees of each company, terminated ones included (snapshot). Each load replaces all rows of its company.';
COMMENT ON COLUMN roubler.employees.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN roubler.employees.company_id IS 'Roubler company id.';
COMMENT ON COLUMN roubler.employees.employee_id IS 'Employee id.';
COMMENT ON COLUMN roubler.employees.full_name IS 'Full name.';
COMMENT ON COLUMN roubler.employees.work_email IS 'Work e-mail address.';
COMMENT ON COLUMN roubler.employees.status IS 'Employment status: Active, Terminated, Onboarding, Invited (or a newer value).';
COMMENT ON COLUMN roubler.employees.rosterable IS 'Whether the employee can be rostered.';
COMMENT ON COLUMN roubler.employees.visible IS 'Whether the employee is visible in Roubler.';
COMMENT ON COLUMN roubler.employees.person_mobile IS 'Personal mobile number.';
COMMENT ON COLUMN roubler.employees.person_email IS 'Personal e-mail address.';
COMMENT ON COLUMN roubler.employees.person_date_of_birth IS 'Date of birth.';
COMMENT ON COLUMN roubler.employees.location_id IS 'Home location id.';
COMMENT ON COLUMN roubler.employees.location_name IS 'Home location name.';
COMMENT ON COLUMN roubler.employees.position_id IS 'Position id.';
COMMENT ON COLUMN roubler.employees.position_name IS 'Position name.';
COMMENT ON COLUMN roubler.employees.start_date IS 'Employment start date.';
COMMENT ON COLUMN roubler.employees.terminated_at IS 'When employment ended; NULL while employed.';
COMMENT ON COLUMN roubler.employees.modified_at IS 'When Roubler last changed the employee.';
COMMENT ON COLUMN roubler.employees._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN roubler.employees._loaded_at IS 'When this row was last written.';

CREATE TABLE roubler.location_sales (
    source      text NOT NULL,
    location_id text NOT NULL,
    day         date NOT NULL,
    company_id  text NOT NULL,
    time_zone   text NOT NULL,
    forecast    numeric,
    actual      numeric,
    hours       numeric,
    cost        numeric,
    _run_id     bigint NOT NULL,
    _loaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, location_id, day)
);
COMMENT ON TABLE roubler.location_sales IS 'Daily sales and labour per location and local day. Each load replaces its location''s days in the window.';
COMMENT ON COLUMN roubler.location_sales.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN roubler.location_sales.location_id IS 'Location id (X-Location-ID).';
COMMENT ON COLUMN roubler.location_sales.day IS 'Calendar day in the location''s own time zone.';
COMMENT ON COLUMN roubler.location_sales.company_id IS 'Company the location belongs to.';
COMMENT ON COLUMN roubler.location_sales.time_zone IS 'IANA time zone the day was computed in.';
COMMENT ON COLUMN roubler.location_sales.forecast IS 'Forecast sales (minor currency units, e.g. cents).';
COMMENT ON COLUMN roubler.location_sales.actual IS 'Actual sales (minor currency units); NULL while the day is not over.';
COMMENT ON COLUMN roubler.location_sales.hours IS 'Labour hours worked.';
COMMENT ON COLUMN roubler.location_sales.cost IS 'Labour cost (minor currency units).';
COMMENT ON COLUMN roubler.location_sales._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN roubler.location_sales._loaded_at IS 'When this row was last written.';

CREATE TABLE roubler.timesheets (
    source                    text NOT NULL,
    location_id               text NOT NULL,
    timesheet_id              text NOT NULL,
    company_id                text NOT NULL,
    start_time                timestamptz NOT NULL,
    end_time                  timestamptz,
    status                    text,
    hours                     numeric,
    cost                      numeric,
    variance                  numeric,
    work_type_id              text,
    work_type_name            text,
    work_type_applied_from_id text,
    breaks                    jsonb,
    employee_id               text,
    employee_name             text,
    position_id               text,
    position_text             text,
    location_name             text,
    location_time_zone        text,
    _run_id                   bigint NOT NULL,
    _loaded_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, location_id, timesheet_id)
);
CREATE INDEX timesheets_window ON roubler.timesheets (source, location_id, start_time);
COMMENT ON TABLE roubler.timesheets IS 'Timesheets (time actually worked) per location. Each load replaces its location''s timesheets starting in the window.';
COMMENT ON COLUMN roubler.timesheets.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN roubler.timesheets.location_id IS 'Location id.';
COMMENT ON COLUMN roubler.timesheets.timesheet_id IS 'Timesheet id.';
COMMENT ON COLUMN roubler.timesheets.company_id IS 'Company the location belongs to.';
COMMENT ON COLUMN roubler.timesheets.start_time IS 'Start of work (UTC); loads replace rows by this column.';
COMMENT ON COLUMN roubler.timesheets.end_time IS 'End of work (UTC).';
COMMENT ON COLUMN roubler.timesheets.status IS 'approved, pending, rejected, ...';
COMMENT ON COLUMN roubler.timesheets.hours IS 'Hours worked (unpaid breaks subtracted).';
COMMENT ON COLUMN roubler.timesheets.cost IS 'Labour cost.';
COMMENT ON COLUMN roubler.timesheets.variance IS 'Worked hours minus rostered hours.';
COMMENT ON COLUMN roubler.timesheets.work_type_id IS 'Work type id.';
COMMENT ON COLUMN roubler.timesheets.work_type_name IS 'Work type, e.g. Ordinary Hours, Overtime.';
COMMENT ON COLUMN roubler.timesheets.work_type_applied_from_id IS 'Work type this one was derived from.';
COMMENT ON COLUMN roubler.timesheets.breaks IS 'Breaks as a JSON array of {id, startTime, endTime, subtracts}; subtracts = unpaid.';
COMMENT ON COLUMN roubler.timesheets.employee_id IS 'Employee id.';
COMMENT ON COLUMN roubler.timesheets.employee_name IS 'Employee full name.';
COMMENT ON COLUMN roubler.timesheets.position_id IS 'Position id.';
COMMENT ON COLUMN roubler.timesheets.position_text IS 'Position name.';
COMMENT ON COLUMN roubler.timesheets.location_name IS 'Location name.';
COMMENT ON COLUMN roubler.timesheets.location_time_zone IS 'IANA time zone of the location as the timesheet states it.';
COMMENT ON COLUMN roubler.timesheets._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN roubler.timesheets._loaded_at IS 'When this row was last written.';

CREATE TABLE roubler.shifts (
    source        text NOT NULL,
    location_id   text NOT NULL,
    shift_id      text NOT NULL,
    company_id    text NOT NULL,
    start_time    timestamptz NOT NULL,
    end_time      timestamptz,
    published     boolean,
    hours         numeric,
    breaks        jsonb,
    employee_id   text,
    employee_name text,
    position_id   text,
    position_text text,
    location_name text,
    _run_id       bigint NOT NULL,
    _loaded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, location_id, shift_id)
);
CREATE INDEX shifts_window ON roubler.shifts (source, location_id, start_time);
COMMENT ON TABLE roubler.shifts IS 'Rostered shifts per location, published or not. Each load replaces its location''s shifts starting in the window.';
COMMENT ON COLUMN roubler.shifts.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN roubler.shifts.location_id IS 'Location id.';
COMMENT ON COLUMN roubler.shifts.shift_id IS 'Shift id.';
COMMENT ON COLUMN roubler.shifts.company_id IS 'Company the location belongs to.';
COMMENT ON COLUMN roubler.shifts.start_time IS 'Shift start (UTC); loads replace rows by this column.';
COMMENT ON COLUMN roubler.shifts.end_time IS 'Shift end (UTC).';
COMMENT ON COLUMN roubler.shifts.published IS 'Whether the shift is published to staff.';
COMMENT ON COLUMN roubler.shifts.hours IS 'Rostered hours (unpaid breaks subtracted).';
COMMENT ON COLUMN roubler.shifts.breaks IS 'Breaks as a JSON array of {id, startTime, endTime, subtracts}.';
COMMENT ON COLUMN roubler.shifts.employee_id IS 'Assigned employee id; NULL for an open shift.';
COMMENT ON COLUMN roubler.shifts.employee_name IS 'Assigned employee name.';
COMMENT ON COLUMN roubler.shifts.position_id IS 'Position id.';
COMMENT ON COLUMN roubler.shifts.position_text IS 'Position name.';
COMMENT ON COLUMN roubler.shifts.location_name IS 'Location name.';
COMMENT ON COLUMN roubler.shifts._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN roubler.shifts._loaded_at IS 'When this row was last written.';

CREATE TABLE altrata.events (
    source                      text NOT NULL,
    subject_id                  text NOT NULL,
    event_id                    text NOT NULL,
    event_type                  text,
    event_text                  text,
    event_date                  date,
    event_date_precision        text,
    event_display_date          text,
    announcement_date           date,
    announcement_date_precision text,
    announcement_display_date   text,
    event_published_date        date,
    start_role_title            text,
    end_role_title              text,
    person_mentions             jsonb,
    organization_mentions       jsonb,
    _run_id                     bigint NOT NULL,
    _loaded_at                  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, subject_id, event_id)
);
COMMENT ON TABLE altrata.events IS 'Events (job changes, funding, awards, ...) about each watched person or organisation (snapshot of the whole watch-list).';
COMMENT ON COLUMN altrata.events.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN altrata.events.subject_id IS 'The watched Altrata id the event was fetched for (1-per-<n> or 1-org-<n>).';
COMMENT ON COLUMN altrata.events.event_id IS 'Event id.';
COMMENT ON COLUMN altrata.events.event_type IS 'Event type, e.g. Job Change.';
COMMENT ON COLUMN altrata.events.event_text IS 'Event description.';
COMMENT ON COLUMN altrata.events.event_date IS 'Date of the event; see event_date_precision.';
COMMENT ON COLUMN altrata.events.event_date_precision IS 'How precise event_date is: DAY, MONTH (date is the 1st) or YEAR (date is 1 January).';
COMMENT ON COLUMN altrata.events.event_display_date IS 'Human form of the event date, e.g. June 2025.';
COMMENT ON COLUMN altrata.events.announcement_date IS 'Date the event was announced; see announcement_date_precision.';
COMMENT ON COLUMN altrata.events.announcement_date_precision IS 'How precise announcement_date is: DAY, MONTH or YEAR.';
COMMENT ON COLUMN altrata.events.announcement_display_date IS 'Human form of the announcement date.';
COMMENT ON COLUMN altrata.events.event_published_date IS 'Date Altrata published the event.';
COMMENT ON COLUMN altrata.events.start_role_title IS 'New role title (job changes).';
COMMENT ON COLUMN altrata.events.end_role_title IS 'Previous role title (job changes).';
COMMENT ON COLUMN altrata.events.person_mentions IS 'People named in the event: JSON array of {altrataId, name}.';
COMMENT ON COLUMN altrata.events.organization_mentions IS 'Organisations named in the event: JSON array of {altrataId, name}.';
COMMENT ON COLUMN altrata.events._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN altrata.events._loaded_at IS 'When this row was last written.';

CREATE TABLE altrata.profiles (
    source                    text NOT NULL,
    altrata_id                text NOT NULL,
    kind                      text NOT NULL CHECK (kind IN ('person', 'organization')),
    name                      text,
    first_name                text,
    last_name                 text,
    title                     text,
    primary_organization_id   text,
    primary_organization_name text,
    industry                  text,
    country                   text,
    city                      text,
    employee_count            integer,
    website                   text,
    net_worth_usd             numeric,
    revenue_usd               numeric,
    wx_person_id              text,
    updated_at                timestamptz,
    _run_id                   bigint NOT NULL,
    _loaded_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, altrata_id)
);
COMMENT ON TABLE altrata.profiles IS 'Profiles of the watched people and organisations (snapshot of the whole watch-list). Premium fields are NULL when the subscription does not cover them (see etl.runs.warnings).';
COMMENT ON COLUMN altrata.profiles.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN altrata.profiles.altrata_id IS 'Altrata id: 1-per-<n> for a person, 1-org-<n> for an organisation.';
COMMENT ON COLUMN altrata.profiles.kind IS 'person or organization.';
COMMENT ON COLUMN altrata.profiles.name IS 'Full name of the person, or the organisation''s name.';
COMMENT ON COLUMN altrata.profiles.first_name IS 'First name (persons).';
COMMENT ON COLUMN altrata.profiles.last_name IS 'Last name (persons).';
COMMENT ON COLUMN altrata.profiles.title IS 'Current primary role title (persons).';
COMMENT ON COLUMN altrata.profiles.primary_organization_id IS 'Altrata id of the person''s primary organisation.';
COMMENT ON COLUMN altrata.profiles.primary_organization_name IS 'Name of the person''s primary organisation.';
COMMENT ON COLUMN altrata.profiles.industry IS 'Industry (organisations).';
COMMENT ON COLUMN altrata.profiles.country IS 'Country (ISO 3166-1 alpha-2): residence for persons, headquarters for organisations.';
COMMENT ON COLUMN altrata.profiles.city IS 'City of residence (persons).';
COMMENT ON COLUMN altrata.profiles.employee_count IS 'Number of employees (organisations).';
COMMENT ON COLUMN altrata.profiles.website IS 'Website (organisations).';
COMMENT ON COLUMN altrata.profiles.net_worth_usd IS 'Estimated net worth in USD (persons; premium field).';
COMMENT ON COLUMN altrata.profiles.revenue_usd IS 'Annual revenue in USD (organisations; premium field).';
COMMENT ON COLUMN altrata.profiles.wx_person_id IS 'Legacy Wealth-X person id (deprecated by the vendor).';
COMMENT ON COLUMN altrata.profiles.updated_at IS 'When Altrata last updated the profile.';
COMMENT ON COLUMN altrata.profiles._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN altrata.profiles._loaded_at IS 'When this row was last written.';

CREATE TABLE retently.customers (
    source       text NOT NULL,
    customer_id  text NOT NULL,
    created_date timestamptz NOT NULL,
    email        text,
    first_name   text,
    last_name    text,
    company_name text,
    company_id   text,
    tags         jsonb,
    properties   jsonb,
    _run_id      bigint NOT NULL,
    _loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, customer_id)
);
CREATE INDEX customers_window ON retently.customers (source, created_date);
COMMENT ON TABLE retently.customers IS 'Survey customers (subscribers). Each load replaces the customers created in its window.';
COMMENT ON COLUMN retently.customers.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retently.customers.customer_id IS 'Retently customer id.';
COMMENT ON COLUMN retently.customers.created_date IS 'When the customer was created (UTC); loads replace rows by this column.';
COMMENT ON COLUMN retently.customers.email IS 'E-mail address.';
COMMENT ON COLUMN retently.customers.first_name IS 'First name.';
COMMENT ON COLUMN retently.customers.last_name IS 'Last name.';
COMMENT ON COLUMN retently.customers.company_name IS 'Company name.';
COMMENT ON COLUMN retently.customers.company_id IS 'Retently company id (retently.companies.company_id).';
COMMENT ON COLUMN retently.customers.tags IS 'Tags as a JSON array of strings.';
COMMENT ON COLUMN retently.customers.properties IS 'Custom properties as a JSON array of {label, name, type, value}.';
COMMENT ON COLUMN retently.customers._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retently.customers._loaded_at IS 'When this row was last written.';

CREATE TABLE retently.feedback (
    source               text NOT NULL,
    feedback_id          text NOT NULL,
    created_date         timestamptz NOT NULL,
    customer_id          text,
    email                text,
    first_name           text,
    last_name            text,
    company_name         text,
    job_title            text,
    country              text,
    state                text,
    city                 text,
    tags                 jsonb,
    custom_props         jsonb,
    campaign_id          text,
    campaign_name        text,
    score                integer,
    comment              text,
    checkbox             boolean,
    additional_questions jsonb,
    feedback_tags        jsonb,
    notes                jsonb,
    status               text,
    assigned             text,
    rating_category      text,
    resolved             boolean,
    channel              text,
    metrics_type         text,
    is_bogus             boolean,
    _run_id              bigint NOT NULL,
    _loaded_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, feedback_id)
);
CREATE INDEX feedback_window ON retently.feedback (source, created_date);
COMMENT ON TABLE retently.feedback IS 'Survey responses. Each load replaces the responses created in its window.';
COMMENT ON COLUMN retently.feedback.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retently.feedback.feedback_id IS 'Response id.';
COMMENT ON COLUMN retently.feedback.created_date IS 'When the response was given (UTC); loads replace rows by this column.';
COMMENT ON COLUMN retently.feedback.customer_id IS 'Customer who responded (retently.customers.customer_id).';
COMMENT ON COLUMN retently.feedback.email IS 'Respondent e-mail.';
COMMENT ON COLUMN retently.feedback.first_name IS 'Respondent first name.';
COMMENT ON COLUMN retently.feedback.last_name IS 'Respondent last name.';
COMMENT ON COLUMN retently.feedback.company_name IS 'Respondent company.';
COMMENT ON COLUMN retently.feedback.job_title IS 'Respondent job title.';
COMMENT ON COLUMN retently.feedback.country IS 'Respondent country.';
COMMENT ON COLUMN retently.feedback.state IS 'Respondent state or region.';
COMMENT ON COLUMN retently.feedback.city IS 'Respondent city.';
COMMENT ON COLUMN retently.feedback.tags IS 'Customer tags as a JSON array.';
COMMENT ON COLUMN retently.feedback.custom_props IS 'Custom properties as JSON.';
COMMENT ON COLUMN retently.feedback.campaign_id IS 'Campaign the survey was sent in (retently.campaigns.campaign_id).';
COMMENT ON COLUMN retently.feedback.campaign_name IS 'Campaign name.';
COMMENT ON COLUMN retently.feedback.score IS 'Score given (0-10 for NPS).';
COMMENT ON COLUMN retently.feedback.comment IS 'Free-text comment.';
COMMENT ON COLUMN retently.feedback.checkbox IS 'Checkbox answer, if the survey had one.';
COMMENT ON COLUMN retently.feedback.additional_questions IS 'Answers to additional questions as JSON.';
COMMENT ON COLUMN retently.feedback.feedback_tags IS 'Topics tagged on the response as a JSON array.';
COMMENT ON COLUMN retently.feedback.notes IS 'Notes on the response as JSON.';
COMMENT ON COLUMN retently.feedback.status IS 'Follow-up status: open or resolved.';
COMMENT ON COLUMN retently.feedback.assigned IS 'Who the follow-up is assigned to.';
COMMENT ON COLUMN retently.feedback.rating_category IS 'promoter, passive or detractor.';
COMMENT ON COLUMN retently.feedback.resolved IS 'Whether the follow-up is resolved.';
COMMENT ON COLUMN retently.feedback.channel IS 'Channel the survey was answered through (email, in-app, link).';
COMMENT ON COLUMN retently.feedback.metrics_type IS 'Metric surveyed, e.g. NPS.';
COMMENT ON COLUMN retently.feedback.is_bogus IS 'Whether Retently flagged the response as bogus.';
COMMENT ON COLUMN retently.feedback._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retently.feedback._loaded_at IS 'When this row was last written.';

CREATE TABLE retently.companies (
    source         text NOT NULL,
    company_id     text NOT NULL,
    created_date   timestamptz,
    domain         text,
    company_name   text,
    industry_name  text,
    tags           jsonb,
    nps            numeric,
    csat           numeric,
    ces            numeric,
    star           numeric,
    contacts_count integer,
    _run_id        bigint NOT NULL,
    _loaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, company_id)
);
COMMENT ON TABLE retently.companies IS 'Companies with their survey metrics (snapshot).';
COMMENT ON COLUMN retently.companies.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retently.companies.company_id IS 'Retently company id.';
COMMENT ON COLUMN retently.companies.created_date IS 'When the company was created.';
COMMENT ON COLUMN retently.companies.domain IS 'Company domain.';
COMMENT ON COLUMN retently.companies.company_name IS 'Company name.';
COMMENT ON COLUMN retently.companies.industry_name IS 'Industry.';
COMMENT ON COLUMN retently.companies.tags IS 'Tags as a JSON array.';
COMMENT ON COLUMN retently.companies.nps IS 'Net Promoter Score of the company (-100 to 100).';
COMMENT ON COLUMN retently.companies.csat IS 'Customer satisfaction score.';
COMMENT ON COLUMN retently.companies.ces IS 'Customer effort score.';
COMMENT ON COLUMN retently.companies.star IS 'Star rating.';
COMMENT ON COLUMN retently.companies.contacts_count IS 'Number of customers of the company.';
COMMENT ON COLUMN retently.companies._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retently.companies._loaded_at IS 'When this row was last written.';

CREATE TABLE retently.campaigns (
    source        text NOT NULL,
    campaign_id   text NOT NULL,
    name          text,
    is_active     boolean,
    template_id   text,
    metric        text,
    campaign_type text,
    channel       text,
    _run_id       bigint NOT NULL,
    _loaded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, campaign_id)
);
COMMENT ON TABLE retently.campaigns IS 'Survey campaigns (snapshot).';
COMMENT ON COLUMN retently.campaigns.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retently.campaigns.campaign_id IS 'Campaign id.';
COMMENT ON COLUMN retently.campaigns.name IS 'Campaign name.';
COMMENT ON COLUMN retently.campaigns.is_active IS 'Whether the campaign is active.';
COMMENT ON COLUMN retently.campaigns.template_id IS 'Survey template id.';
COMMENT ON COLUMN retently.campaigns.metric IS 'Metric surveyed, e.g. NPS.';
COMMENT ON COLUMN retently.campaigns.campaign_type IS 'Campaign type, e.g. recurring or transactional (the API''s type).';
COMMENT ON COLUMN retently.campaigns.channel IS 'Channel: email, in-app, link, ...';
COMMENT ON COLUMN retently.campaigns._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retently.campaigns._loaded_at IS 'When this row was last written.';

CREATE TABLE retently.nps_score (
    source           text NOT NULL,
    day              date NOT NULL,
    nps              numeric,
    promoters        numeric,
    passives         numeric,
    detractors       numeric,
    promoters_count  integer,
    passives_count   integer,
    detractors_count integer,
    total_responses  integer,
    _run_id          bigint NOT NULL,
    _loaded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, day)
);
COMMENT ON TABLE retently.nps_score IS 'Account-wide NPS, one row per source and UTC day it was read (a daily snapshot; a rerun the same day replaces that day).';
COMMENT ON COLUMN retently.nps_score.source IS 'Configured source (upstream account) name this row was loaded from; several accounts of one vendor can share the table.';
COMMENT ON COLUMN retently.nps_score.day IS 'UTC day the score was read.';
COMMENT ON COLUMN retently.nps_score.nps IS 'Net Promoter Score (-100 to 100).';
COMMENT ON COLUMN retently.nps_score.promoters IS 'Share of promoters in percent.';
COMMENT ON COLUMN retently.nps_score.passives IS 'Share of passives in percent.';
COMMENT ON COLUMN retently.nps_score.detractors IS 'Share of detractors in percent.';
COMMENT ON COLUMN retently.nps_score.promoters_count IS 'Number of promoters.';
COMMENT ON COLUMN retently.nps_score.passives_count IS 'Number of passives.';
COMMENT ON COLUMN retently.nps_score.detractors_count IS 'Number of detractors.';
COMMENT ON COLUMN retently.nps_score.total_responses IS 'Number of responses counted.';
COMMENT ON COLUMN retently.nps_score._run_id IS 'The load that last wrote this row (etl.runs.id).';
COMMENT ON COLUMN retently.nps_score._loaded_at IS 'When this row was last written.';
