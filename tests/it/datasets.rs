//! Datasets without the upstream calls: legal window sizes, local days across DST changes, the
//! vendor tables' migration (keys, comments, the columns each row struct writes and their types)
//! and the page writer's replace/upsert semantics against real PostgreSQL. End-to-end loads from
//! the sandbox are in `tests/datasets_e2e.rs`.

use crate::support;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use reporting_etl::datasets::sink::{Replace, Sink, Writer};
use reporting_etl::datasets::window::{self, Window, local_day_range, local_midnight};
use reporting_etl::datasets::{ScopeTarget, split_windows_at};
use reporting_etl::vendors::retently::datasets::CampaignRow;
use reporting_etl::vendors::roubler::datasets::LocationSalesRow;
use reporting_etl::vendors::table_spec;
use reporting_etl::vendors::{CATALOG, retarus, retently, roubler};
use support::TestDb;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

#[test]
fn a_100_day_retarus_backfill_is_split_into_contiguous_windows_of_at_most_45_days_within_the_last_90() {
    let fax = retarus::datasets::FAX_OUT_UDR.info();
    let now = utc("2026-03-01T12:00:00Z");
    let windows = split_windows_at(fax, now - Duration::days(100), now - Duration::minutes(5), now);
    assert!(windows.len() >= 2, "{windows:?}");
    let oldest_allowed = now - Duration::days(90);
    for w in &windows {
        assert!(w.len() <= Duration::days(45), "{w} is longer than 45 days");
        assert!(w.start >= oldest_allowed, "{w} starts more than 90 days back");
        assert!(w.start < w.end);
    }
    for pair in windows.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "windows are contiguous");
    }
    assert_eq!(windows.last().unwrap().end, now - Duration::minutes(5));
    // Everything inside the retention is covered but the catalogue's margin (a day, see
    // `docs/vendors/retarus.md#history-limit`): nothing but the untouchable first 10 days is lost.
    assert_eq!(windows[0].start, now - fax.history_limit);
    assert!(windows[0].start - oldest_allowed <= Duration::days(1));
}

#[test]
fn a_retarus_range_entirely_older_than_90_days_gives_no_windows() {
    let fax = retarus::datasets::FAX_IN_UDR.info();
    let now = utc("2026-03-01T12:00:00Z");
    assert!(split_windows_at(fax, now - Duration::days(120), now - Duration::days(95), now).is_empty());
}

#[test]
fn roubler_windows_are_whole_days_for_sales_and_weeks_for_timesheets() {
    let now = utc("2026-03-01T12:00:00Z");
    let sales = roubler::datasets::LOCATION_SALES.info();
    let windows = split_windows_at(
        sales,
        utc("2026-01-01T06:00:00Z"),
        utc("2026-02-15T03:00:00Z"),
        now,
    );
    assert_eq!(windows.first().unwrap().start, utc("2026-01-01T00:00:00Z"));
    assert_eq!(windows.last().unwrap().end, utc("2026-02-16T00:00:00Z"));
    assert!(windows.iter().all(|w| w.len() <= Duration::days(31)));
    let sheets = roubler::datasets::TIMESHEETS.info();
    let windows = split_windows_at(
        sheets,
        utc("2026-01-01T00:00:00Z"),
        utc("2026-01-20T00:00:00Z"),
        now,
    );
    assert_eq!(windows.len(), 3);
    assert!(windows.iter().all(|w| w.len() <= Duration::days(7)));
    let employees = roubler::datasets::EMPLOYEES.info();
    assert_eq!(
        split_windows_at(
            employees,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-03-01T00:00:00Z"),
            now
        )
        .len(),
        1
    );
}

#[test]
fn local_days_in_sydney_and_berlin_start_at_their_own_midnights_across_the_dst_changes() {
    // 2025-03-30: Berlin springs forward (CET → CEST). 2025-04-06: Sydney falls back (AEDT → AEST).
    let window = Window::new(utc("2025-03-29T00:00:00Z"), utc("2025-04-08T00:00:00Z"));
    assert_eq!(window.dates(), (day("2025-03-29"), day("2025-04-08")));
    let sydney: Tz = "Australia/Sydney".parse().unwrap();
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    assert_eq!(
        local_day_range(sydney, &window),
        (utc("2025-03-28T13:00:00Z"), utc("2025-04-07T14:00:00Z"))
    );
    assert_eq!(
        local_day_range(berlin, &window),
        (utc("2025-03-28T23:00:00Z"), utc("2025-04-07T22:00:00Z"))
    );
    // The day of the change itself: 23 hours in Berlin, 25 in Sydney.
    let berlin_day = local_midnight(berlin, day("2025-03-31")) - local_midnight(berlin, day("2025-03-30"));
    assert_eq!(berlin_day, Duration::hours(23));
    let sydney_day = local_midnight(sydney, day("2025-04-07")) - local_midnight(sydney, day("2025-04-06"));
    assert_eq!(sydney_day, Duration::hours(25));
    // Every local midnight really is 00:00 on the wall clock.
    for offset in 0..10 {
        let d = day("2025-03-29") + Duration::days(offset);
        for tz in [sydney, berlin] {
            let local = tz.from_utc_datetime(&local_midnight(tz, d).naive_utc());
            assert_eq!(local.date_naive(), d);
            assert_eq!(local.time(), chrono::NaiveTime::MIN);
        }
    }
}

#[test]
fn a_midnight_that_does_not_exist_maps_to_the_first_instant_of_the_day() {
    // Chile springs forward at 00:00: 2024-09-08 has no midnight, the day starts at 01:00 local.
    let santiago: Tz = "America/Santiago".parse().unwrap();
    let start = local_midnight(santiago, day("2024-09-08"));
    let local = santiago.from_utc_datetime(&start.naive_utc());
    assert_eq!(local.date_naive(), day("2024-09-08"));
    assert_eq!(local.format("%H:%M").to_string(), "01:00");
}

#[tokio::test]
async fn the_sandbox_answers_exactly_the_window_dates_for_locations_in_sydney_and_berlin() {
    let sandbox = sandbox::Sandbox::start(sandbox::SandboxOptions::default())
        .await
        .unwrap();
    let anchor_day = Utc::now().date_naive();
    let window = Window::new(
        window::utc_midnight(anchor_day - Duration::days(20)),
        window::utc_midnight(anchor_day - Duration::days(10)),
    );
    let (first, last) = window.dates();
    let companies = sandbox.roubler.companies();
    let company = companies[0]["id"].as_str().unwrap();
    let mut zones_seen = Vec::new();
    for location in sandbox.roubler.locations(company) {
        let tz: Tz = location["timeZone"].as_str().unwrap().parse().unwrap();
        let id = location["id"].as_str().unwrap();
        let (start, end) = local_day_range(tz, &window);
        let days: Vec<NaiveDate> = sandbox
            .roubler
            .location_sales(id, start, end)
            .iter()
            .map(|s| day(s["day"].as_str().unwrap()))
            .collect();
        let expected: Vec<NaiveDate> = (0..(last - first).num_days())
            .map(|i| first + Duration::days(i))
            .collect();
        assert_eq!(days, expected, "location {id} in {tz}");
        zones_seen.push(tz.name().to_owned());
    }
    assert!(zones_seen.iter().any(|z| z == "Australia/Sydney"));
    assert!(zones_seen.iter().any(|z| z == "Europe/Berlin"));
}

#[test]
fn scope_keys_are_what_run_records_show() {
    assert_eq!(ScopeTarget::Customer("99999".into()).key(), "99999");
    assert_eq!(ScopeTarget::Company("789".into()).key(), "789");
    let location = ScopeTarget::Location {
        company: "789".into(),
        id: "10101".into(),
        time_zone: chrono_tz::Australia::Sydney,
    };
    assert_eq!(location.key(), "10101");
    assert_eq!(
        ScopeTarget::WatchList(vec!["1-per-1".into(), "1-org-2".into()]).key(),
        "1-per-1,1-org-2"
    );
    assert_eq!(ScopeTarget::Account.key(), "all");
}

const VENDOR_SCHEMAS: &[&str] = &["retarus", "roubler", "altrata", "retently"];

#[tokio::test]
async fn every_vendor_table_and_column_has_a_comment() {
    let db = TestDb::new().await;
    let missing: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.table_schema::text, c.table_name::text, c.column_name::text
         FROM information_schema.columns c
         JOIN pg_attribute a ON a.attrelid = format('%I.%I', c.table_schema, c.table_name)::regclass
                            AND a.attname = c.column_name
         WHERE c.table_schema = ANY($1)
           AND coalesce(col_description(a.attrelid, a.attnum), '') = ''
         ORDER BY 1, 2, 3",
    )
    .bind(VENDOR_SCHEMAS)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(missing.is_empty(), "columns without a comment: {missing:?}");
    let bare_tables: Vec<(String,)> = sqlx::query_as(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY($1) AND c.relkind = 'r' AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''",
    )
    .bind(VENDOR_SCHEMAS)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        bare_tables.is_empty(),
        "tables without a comment: {bare_tables:?}"
    );
}

#[tokio::test]
async fn every_dataset_table_has_the_columns_its_loader_writes_and_a_key_led_by_source() {
    let db = TestDb::new().await;
    for dataset in CATALOG {
        let spec = table_spec(dataset).unwrap_or_else(|| panic!("{} has no table spec", dataset.name));
        assert_eq!(spec.table, dataset.table);
        let (schema, table) = dataset.table.split_once('.').unwrap();
        let typed: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2",
        )
        .bind(schema)
        .bind(table)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let mut columns: Vec<String> = typed.iter().map(|(name, _)| name.clone()).collect();
        columns.sort();
        let mut expected: Vec<String> = spec.copy_columns().iter().map(|c| c.to_string()).collect();
        expected.push("_loaded_at".into());
        expected.sort();
        assert_eq!(columns, expected, "{}", dataset.table);
        // Each field of the row struct may be stored in its column's type.
        let allowed = (spec.column_types)();
        assert_eq!(
            allowed.len(),
            spec.columns.len(),
            "{}: one list of column types per data column",
            dataset.table
        );
        for (column, allowed) in spec.columns.iter().zip(allowed) {
            let (_, data_type) = typed
                .iter()
                .find(|(name, _)| name == column)
                .unwrap_or_else(|| panic!("{}.{column} is missing", dataset.table));
            assert!(
                allowed.contains(&data_type.as_str()),
                "{}.{column} is {data_type}, but its row struct writes one of {allowed:?}",
                dataset.table
            );
        }
        let key: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY k.ord",
        )
        .bind(dataset.table)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(key, spec.primary_key(), "{}", dataset.table);
        // Typed, not everything as text.
        assert!(
            typed.iter().any(|(_, t)| t != "text"),
            "{} is all text",
            dataset.table
        );
    }
}

fn campaign(id: &str, name: &str) -> CampaignRow {
    CampaignRow {
        campaign_id: id.into(),
        name: Some(name.into()),
        is_active: Some(true),
        template_id: None,
        metric: Some("NPS".into()),
        campaign_type: Some("recurring".into()),
        channel: Some("email".into()),
    }
}

async fn names(db: &TestDb, source: &str) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "SELECT campaign_id, name, _run_id FROM retently.campaigns WHERE source = $1 ORDER BY campaign_id",
    )
    .bind(source)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Stages `pages` of campaigns for `source` (replacing the whole source) and swaps them in;
/// `commit` false rolls the swap back. Returns the distinct rows the swap wrote.
async fn load_campaigns(
    db: &TestDb,
    source: &str,
    run: i64,
    pages: Vec<Vec<CampaignRow>>,
    commit: bool,
) -> i64 {
    let spec = table_spec(retently::datasets::CAMPAIGNS.info()).unwrap();
    let mut sink = Sink::acquire(&db.pool).await.unwrap();
    let mut writer = Writer::open(&mut sink, spec, source, run).await.unwrap();
    writer
        .replace(&mut sink, &Replace::All { scope: None })
        .await
        .unwrap();
    for page in pages {
        writer.write(&mut sink, page).await.unwrap();
    }
    writer.close(&mut sink).await.unwrap();
    let (tx, rows) = sink.begin_swap().await.unwrap();
    if commit {
        tx.commit().await.unwrap();
        sink.finish();
    } else {
        tx.rollback().await.unwrap();
    }
    rows
}

#[tokio::test]
async fn a_record_repeated_within_and_across_pages_is_written_once_with_its_last_values() {
    let db = TestDb::new().await;
    let pages = vec![
        vec![
            campaign("a", "first"),
            campaign("b", "b"),
            campaign("a", "second"),
        ],
        vec![campaign("b", "b again"), campaign("c", "c")],
    ];
    assert_eq!(
        load_campaigns(&db, "acct", 7, pages, true).await,
        3,
        "three distinct campaigns"
    );
    assert_eq!(
        names(&db, "acct").await,
        vec![
            ("a".into(), "second".into(), 7),
            ("b".into(), "b again".into(), 7),
            ("c".into(), "c".into(), 7)
        ]
    );
}

#[tokio::test]
async fn a_snapshot_replaces_only_its_own_source_and_a_rolled_back_load_changes_nothing() {
    let db = TestDb::new().await;
    for (source, run) in [("one", 1), ("two", 2)] {
        let page = vec![campaign("a", source), campaign("b", source)];
        load_campaigns(&db, source, run, vec![page], true).await;
    }
    // Source one now has only "c"; source two is untouched.
    load_campaigns(&db, "one", 3, vec![vec![campaign("c", "new")]], true).await;
    assert_eq!(names(&db, "one").await, vec![("c".into(), "new".into(), 3)]);
    assert_eq!(names(&db, "two").await.len(), 2);
    // A swap that deleted and wrote, then rolled back, leaves the previous rows.
    load_campaigns(&db, "two", 4, vec![vec![campaign("z", "half")]], false).await;
    assert_eq!(
        names(&db, "two").await,
        vec![("a".into(), "two".into(), 2), ("b".into(), "two".into(), 2)]
    );
}

#[tokio::test]
async fn a_load_staged_but_never_swapped_leaves_the_table_and_the_pool_untouched() {
    let db = TestDb::new().await;
    load_campaigns(&db, "acct", 1, vec![vec![campaign("a", "kept")]], true).await;
    let spec = table_spec(retently::datasets::CAMPAIGNS.info()).unwrap();
    let mut sink = Sink::acquire(&db.pool).await.unwrap();
    let mut writer = Writer::open(&mut sink, spec, "acct", 2).await.unwrap();
    writer
        .replace(&mut sink, &Replace::All { scope: None })
        .await
        .unwrap();
    writer
        .write(&mut sink, vec![campaign("z", "staged")])
        .await
        .unwrap();
    // While staged, nothing of the load is visible and no transaction waits open.
    assert_eq!(names(&db, "acct").await, vec![("a".into(), "kept".into(), 1)]);
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(open, 0, "staging holds no transaction");
    // A load dropped before its swap (failed, timed out, interrupted) changes nothing.
    drop(writer);
    drop(sink);
    assert_eq!(names(&db, "acct").await, vec![("a".into(), "kept".into(), 1)]);
}

#[tokio::test]
async fn a_window_replace_deletes_exactly_that_scope_and_window() {
    let db = TestDb::new().await;
    let spec = table_spec(roubler::datasets::LOCATION_SALES.info()).unwrap();
    let row = |location: &'static str, d: &str, actual: f64| LocationSalesRow {
        location_id: location,
        day: day(d),
        company_id: "789",
        time_zone: "Australia/Sydney",
        forecast: Some(1.0),
        actual: Some(actual),
        hours: Some(2.0),
        cost: Some(3.0),
    };
    let loads = [
        (
            1,
            None,
            vec![
                row("1", "2025-04-01", 1.0),
                row("1", "2025-04-02", 1.0),
                row("1", "2025-04-03", 1.0),
                row("2", "2025-04-02", 1.0),
            ],
        ),
        (
            2,
            Some(Replace::Dates {
                scope: Some("1".into()),
                first: day("2025-04-02"),
                last: day("2025-04-03"),
            }),
            vec![row("1", "2025-04-02", 9.0)],
        ),
    ];
    for (run, replace, rows) in loads {
        let mut sink = Sink::acquire(&db.pool).await.unwrap();
        let mut writer = Writer::open(&mut sink, spec, "r", run).await.unwrap();
        if let Some(replace) = replace {
            writer.replace(&mut sink, &replace).await.unwrap();
        }
        writer.write(&mut sink, rows).await.unwrap();
        writer.close(&mut sink).await.unwrap();
        let (tx, _) = sink.begin_swap().await.unwrap();
        tx.commit().await.unwrap();
        sink.finish();
    }
    let rows: Vec<(String, NaiveDate, f64)> = sqlx::query_as(
        "SELECT location_id, day, actual::float8 FROM roubler.location_sales ORDER BY location_id, day",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("1".into(), day("2025-04-01"), 1.0),
            ("1".into(), day("2025-04-02"), 9.0),
            ("1".into(), day("2025-04-03"), 1.0),
            ("2".into(), day("2025-04-02"), 1.0),
        ]
    );
}

#[tokio::test]
async fn a_table_whose_key_differs_from_the_loaders_is_refused_loudly() {
    let db = TestDb::new().await;
    sqlx::query("ALTER TABLE retently.campaigns DROP CONSTRAINT campaigns_pkey")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE retently.campaigns ADD PRIMARY KEY (campaign_id, source)")
        .execute(&db.pool)
        .await
        .unwrap();
    let spec = table_spec(retently::datasets::CAMPAIGNS.info()).unwrap();
    let mut sink = Sink::acquire(&db.pool).await.unwrap();
    let error = Writer::open(&mut sink, spec, "x", 1)
        .await
        .err()
        .expect("refused");
    assert!(format!("{error:#}").contains("primary key"), "{error:#}");
}

#[tokio::test]
async fn text_with_tabs_newlines_and_backslashes_survives_copy() {
    let db = TestDb::new().await;
    load_campaigns(
        &db,
        "x",
        1,
        vec![vec![campaign("a", "tab\there\nnew \\N line\r")]],
        true,
    )
    .await;
    let name: String = sqlx::query_scalar("SELECT name FROM retently.campaigns")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // Trimmed at the ends (vendors pad), intact inside.
    assert_eq!(name, "tab\there\nnew \\N line");
}
