//! Load throughput: Retarus `fax_out_udr` records from the sandbox (no rate limit) through the
//! executor and the page writer into PostgreSQL, next to a raw `COPY` of the same rows into an
//! identical table in the same run (the ratio is the figure), plus peak memory (VmHWM).
//!
//! `cargo bench --bench load_throughput` runs 100k records; `-- 100000 1000000` (or
//! `BENCH_RECORDS=100000,1000000`) runs several sizes. Uses `DATABASE_URL`, else the embedded test
//! server.
//!
//! Each size is loaded twice into fresh databases. The first pass has the sandbox generate and
//! serialise every page through async-graphql (about 15k records/s on one core of the 2-core
//! reference machine, slower than the loader); it runs with `--retarus-cache-responses`, so the
//! second pass gets the same answers as stored bytes and measures the loader. The second pass is
//! the end-to-end figure; the first is printed too.
//!
//! The sandbox runs as a separate process (`sandbox --only retarus`, built with
//! `cargo build -p sandbox --release` unless `SANDBOX_BIN` names a binary), so this process's
//! VmHWM is the loader's own: executor, JSON decoding, row mapping and one page of COPY text.
//! The peak is reset before each size (`/proc/self/clear_refs`), so sizes don't inherit each
//! other's. The sandbox's own peak and the CPU seconds of the loader, the sandbox and the
//! PostgreSQL backend during the load are printed too: on a small machine they share the cores,
//! and the CPU split shows which one bounded the end-to-end rate.
//!
//! A size is loaded the way a backfill loads it: one window of whole days (at most 40, within
//! Retarus's 45-day limit), one transaction, 10,000-record pages.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, DurationRound, TimeDelta, Utc};
use futures::StreamExt;
use reporting_etl::catalog::{self, SourceKind};
use reporting_etl::datasets::{LoadRequest, ScopeTarget, Tuning, Window};
use reporting_etl::executor::{CallContext, Executor};
use reporting_etl::vendors;

/// A `/proc/PID/status` field in KiB (`VmHWM:`, `VmRSS:`), 0 when unreadable.
fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of a process, `None` when its `/proc` entry is not readable (e.g. a
/// PostgreSQL server in another container). Assumes the usual 100 clock ticks per second.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may contain spaces): state is the
    // first, utime the 12th and stime the 13th.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn cpu_delta(pid: &str, before: Option<f64>) -> String {
    match (before, cpu_secs(pid)) {
        (Some(a), Some(b)) => format!("{:.1}s", b - a),
        _ => "n/a".into(),
    }
}

/// The sandbox binary: `SANDBOX_BIN`, else built now in release mode (cargo prints its path).
fn sandbox_binary() -> String {
    if let Ok(path) = std::env::var("SANDBOX_BIN") {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "-p",
            "sandbox",
            "--release",
            "--bin",
            "sandbox",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build -p sandbox");
    assert!(output.status.success(), "cargo build -p sandbox --release failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "sandbox")
        .find_map(|m| m["executable"].as_str().map(str::to_owned))
        .expect("cargo reported the sandbox executable")
}

/// A running `sandbox --only retarus`; killed on drop.
struct SandboxProcess {
    child: Child,
    pid: String,
    retarus: serde_json::Value,
}

impl SandboxProcess {
    fn start(binary: &str, anchor: chrono::DateTime<Utc>, history_days: u64, per_day: u64) -> Self {
        let mut child = Command::new(binary)
            .args(["--only", "retarus", "--retarus-cache-responses", "--seed", "42"])
            .args(["--history-days", &history_days.to_string()])
            .args(["--records-per-day", &per_day.to_string()])
            .args(["--anchor", &anchor.to_rfc3339()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the sandbox binary");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the sandbox's first line");
        let summary: serde_json::Value = serde_json::from_str(&line).expect("the sandbox's JSON line");
        SandboxProcess {
            pid: child.id().to_string(),
            child,
            retarus: summary["retarus"].clone(),
        }
    }

    fn field(&self, name: &str) -> String {
        self.retarus[name].as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one load of the window did.
struct Pass {
    /// Dropped (the database with it) once the pass's rows are no longer needed.
    db: Option<support::TestDb>,
    rows: i64,
    pages: i32,
    secs: f64,
    /// This process's peak RSS during the load (KiB) and whether the peak could be reset first.
    hwm_kib: u64,
    rss_before_kib: u64,
    reset: bool,
    cpu: String,
}

/// Loads the window into a fresh database the way a backfill does: one transaction.
async fn load_pass(sandbox: &SandboxProcess, window: Window) -> Pass {
    let db = support::TestDb::new().await;
    let text = format!(
        "[database]\nurl = \"{}\"\npool_size = 4\n\n[sources.retarus]\nkind = \"retarus\"\nallow_http = true\n\
         token_url = \"{}\"\ngraphql_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
         customer_ids = [\"99999\"]\nrate_limit = {{ calls = 100000, per_ms = 1000 }}\n",
        db.url,
        sandbox.field("token_url"),
        sandbox.field("graphql_url"),
        sandbox.field("client_id"),
        sandbox.field("client_secret"),
    );
    let (settings, _file) = support::load_config(&text);
    let settings = Arc::new(settings);
    let exec = Executor::new(
        settings.clone(),
        reporting_etl::auth::build(&settings, db.pool.clone()),
    )
    .unwrap();
    let dataset = catalog::find(SourceKind::Retarus, "fax_out_udr").unwrap();
    let scope = ScopeTarget::Customer("99999".into());
    let call = CallContext::new("retarus", "fax_out_udr");
    let request = LoadRequest {
        source_name: "retarus",
        source: &settings.sources["retarus"],
        dataset,
        scope: &scope,
        window: Some(window),
        run_id: 1,
        call: &call,
    };
    // The peak so far belongs to earlier loads or set-up: start this one's from the current RSS.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before_kib = status_kib("self", "VmRSS:");
    let mut tx = db.pool.begin().await.unwrap();
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let backend = backend.to_string();
    let cpu = (cpu_secs("self"), cpu_secs(&sandbox.pid), cpu_secs(&backend));
    let started = Instant::now();
    let figures = vendors::load_with(&exec, &mut tx, &request, &Tuning::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let cpu = format!(
        "CPU: loader {} sandbox {} postgres backend {}",
        cpu_delta("self", cpu.0),
        cpu_delta(&sandbox.pid, cpu.1),
        cpu_delta(&backend, cpu.2),
    );
    Pass {
        hwm_kib: status_kib("self", "VmHWM:"),
        db: Some(db),
        rows: figures.rows,
        pages: figures.pages,
        secs,
        rss_before_kib,
        reset,
        cpu,
    }
}

fn describe(name: &str, pass: &Pass) -> String {
    format!(
        "{name}: {:.1}s = {:.0} rows/s, loader VmHWM {} MiB (RSS at start {} MiB{}), {}",
        pass.secs,
        pass.rows as f64 / pass.secs,
        pass.hwm_kib / 1024,
        pass.rss_before_kib / 1024,
        if pass.reset { "" } else { ", peak not reset" },
        pass.cpu
    )
}

async fn run(records: u64, binary: &str) {
    let days: u64 = (records / 25_000).clamp(4, 40);
    let per_day = records.div_ceil(days);
    let anchor = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let sandbox = SandboxProcess::start(binary, anchor, days + 2, per_day);
    // Whole days before the anchor's day: every one holds exactly `per_day` records.
    let last_day = anchor.duration_trunc(TimeDelta::days(1)).unwrap();
    let window = Window::new(last_day - Duration::days(days as i64), last_day);

    // First pass: the sandbox generates every page (and remembers its answer). Second pass, into
    // a fresh database: the same requests are answered from memory, so the upstream costs
    // almost nothing and the rate is the loader's (HTTP, JSON decoding, mapping, COPY, upsert).
    let mut cold = load_pass(&sandbox, window).await;
    drop(cold.db.take());
    let warm = load_pass(&sandbox, window).await;
    let sandbox_hwm = status_kib(&sandbox.pid, "VmHWM:");
    drop(sandbox);
    let rows = warm.rows;
    assert_eq!(
        rows as u64,
        days * per_day,
        "the load wrote every generated record"
    );
    assert_eq!(cold.rows, warm.rows);

    // Raw COPY of the very same rows (dumped after the loader's peaks were read) into a table
    // identical to the target (defaults, primary key, indexes), and into a bare landing table.
    let db = warm.db.as_ref().expect("the second pass's database");
    let mut conn = db.pool.acquire().await.unwrap();
    let mut dump = conn
        .copy_out_raw("COPY retarus.fax_out_udr TO STDOUT")
        .await
        .unwrap();
    let mut data = Vec::new();
    while let Some(chunk) = dump.next().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    drop(dump);
    let mut copy_rates = Vec::new();
    for (table, like) in [("bench_raw_same", "INCLUDING ALL"), ("bench_raw_bare", "")] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (LIKE retarus.fax_out_udr {like})"
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let started = Instant::now();
        let mut copy = conn
            .copy_in_raw(&format!("COPY {table} FROM STDIN"))
            .await
            .unwrap();
        copy.send(data.as_slice()).await.unwrap();
        let copied = copy.finish().await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(copied as i64, rows);
        copy_rates.push((secs, copied as f64 / secs));
    }
    let (copy_secs, copy_rate) = copy_rates[0];
    let (bare_secs, bare_rate) = copy_rates[1];
    let load_rate = rows as f64 / warm.secs;
    println!(
        "records={records} rows={rows} pages={} window={days}d x {per_day}/day, {} MiB of COPY text",
        warm.pages,
        data.len() / (1024 * 1024)
    );
    println!(
        "  end-to-end {load_rate:.0} rows/s | raw COPY same rows, identical table (PK) {copy_secs:.2}s = \
         {copy_rate:.0} rows/s | end-to-end/COPY = {:.3} | raw COPY into a bare table {bare_secs:.2}s = {bare_rate:.0} rows/s",
        load_rate / copy_rate,
    );
    println!("  {}", describe("end-to-end, sandbox replaying answers", &warm));
    println!(
        "  {}",
        describe("end-to-end, sandbox generating (first pass)", &cold)
    );
    println!(
        "  sandbox process VmHWM {} MiB (holds every answer of the window)",
        sandbox_hwm / 1024
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
    let binary = sandbox_binary();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for size in sizes {
        runtime.block_on(run(size, &binary));
    }
}
