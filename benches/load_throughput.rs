//! Load throughput: Retarus `fax_out_udr` records from the in-process sandbox (no rate limit)
//! through the executor and the page writer into PostgreSQL, next to a raw `COPY` of the same
//! rows in the same run, plus the process's peak memory (VmHWM).
//!
//! `cargo bench --bench load_throughput` runs 100k records; `-- 1000000` (or `BENCH_RECORDS`)
//! sets other sizes, several may be given. Uses `DATABASE_URL`, else the embedded test server.
//! The sandbox runs in this process and materialises every page it serves, so VmHWM includes
//! the upstream's share; the loader itself holds one page (10,000 records) at a time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, DurationRound, TimeDelta, Utc};
use reporting_etl::config::SourceKind;
use reporting_etl::datasets::{self, LoadRequest, ScopeTarget, Tuning, Window};
use reporting_etl::executor::{CallContext, Executor};

fn vm(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

async fn run(records: u64) {
    // One-day windows keep each sandbox request cheap (it generates the whole window per page).
    let days: u64 = (records / 25_000).clamp(4, 80);
    let per_day = records.div_ceil(days) as u32;
    let anchor = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let options = sandbox::SandboxOptions {
        anchor,
        history_days: days as u32 + 3,
        records_per_day: per_day,
        ..Default::default()
    };
    let sandbox = sandbox::Sandbox::start(options).await.unwrap();
    let db = support::TestDb::new().await;
    let r = &sandbox.retarus;
    let text = format!(
        "[database]\nurl = \"{}\"\npool_size = 4\n\n[sources.retarus]\nkind = \"retarus\"\nallow_http = true\n\
         token_url = \"{}\"\ngraphql_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
         customer_ids = [\"99999\"]\nrate_limit = {{ calls = 100000, per_ms = 1000 }}\n",
        db.url, r.token_url, r.graphql_url, r.client_id, r.client_secret
    );
    let (settings, _file) = support::load_config(&text);
    let settings = Arc::new(settings);
    let exec = Executor::new(
        settings.clone(),
        reporting_etl::auth::build(&settings, db.pool.clone()),
    )
    .unwrap();
    let dataset = datasets::find(SourceKind::Retarus, "fax_out_udr").unwrap();
    let scope = ScopeTarget::Customer("99999".into());
    let first_day = (anchor - Duration::days(days as i64 + 1))
        .duration_trunc(TimeDelta::days(1))
        .unwrap();
    let hwm_before = vm("VmHWM:");
    let started = Instant::now();
    let (mut rows, mut pages) = (0i64, 0i32);
    for d in 0..days as i64 {
        let window = Window::new(first_day + Duration::days(d), first_day + Duration::days(d + 1));
        let call = CallContext::new("retarus", "fax_out_udr");
        let request = LoadRequest {
            source_name: "retarus",
            source: &settings.sources["retarus"],
            dataset,
            scope: &scope,
            window: Some(window),
            run_id: d + 1,
            call: &call,
        };
        let mut tx = db.pool.begin().await.unwrap();
        let figures = datasets::load_with(&exec, &mut tx, &request, &Tuning::default())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        rows += figures.rows;
        pages += figures.pages;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let hwm_after = vm("VmHWM:");

    // Raw COPY of the very same rows into an unindexed copy of the table.
    let mut conn = db.pool.acquire().await.unwrap();
    let mut dump = conn
        .copy_out_raw("COPY retarus.fax_out_udr TO STDOUT")
        .await
        .unwrap();
    let mut data = Vec::new();
    use futures::StreamExt;
    while let Some(chunk) = dump.next().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    drop(dump);
    sqlx::query("CREATE TABLE bench_raw (LIKE retarus.fax_out_udr)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let started = Instant::now();
    let mut copy = conn.copy_in_raw("COPY bench_raw FROM STDIN").await.unwrap();
    copy.send(data.as_slice()).await.unwrap();
    let copied = copy.finish().await.unwrap();
    let copy_secs = started.elapsed().as_secs_f64();

    let load_rate = rows as f64 / load_secs;
    let copy_rate = copied as f64 / copy_secs;
    println!(
        "records={records} rows={rows} pages={pages} windows={days} | load {load_secs:.1}s = {load_rate:.0} rows/s | \
         raw COPY {copy_secs:.2}s = {copy_rate:.0} rows/s | load/COPY = {:.3} | VmHWM {} MiB (before load {} MiB)",
        load_rate / copy_rate,
        hwm_after / 1024,
        hwm_before / 1024,
    );
}

fn main() {
    let mut sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = std::env::var("BENCH_RECORDS")
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![100_000]);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for size in sizes {
        runtime.block_on(run(size));
    }
}
