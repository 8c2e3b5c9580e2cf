//! Load throughput: Retarus `fax_out_udr` records from the sandbox (no rate limit) through the
//! executor, the page writer and the swap into PostgreSQL, next to a raw `COPY` of the same rows
//! into an identical table in the same run (the ratio is the figure), plus peak memory (VmHWM).
//!
//! `cargo bench --bench load_throughput` runs 100k records; `-- 100000 1000000` (or
//! `BENCH_RECORDS=100000,1000000`) runs several sizes; `BENCH_PASSES` (default 3, at least 2)
//! sets how often each size is loaded. Uses `DATABASE_URL`, else the embedded test server.
//!
//! The sandbox serves pre-rendered answers: it runs with `--retarus-cache-responses`, and a
//! priming load (not counted) has it generate and remember every page, so the measured loads
//! cost it only the copying of bytes and what is measured is the loader. Each measured pass
//! loads the window into a fresh database, spawned on the multi-threaded runtime as the service
//! runs its jobs, with the allocator the binary ships with. The raw-COPY baseline is a COPY of
//! the same rows into a fresh table identical to the target (defaults, primary key, indexes),
//! run before the first pass and after every pass: each pass's ratio is its rows/s against the
//! mean of the COPYs on either side of it, so a machine that speeds up or slows down during the
//! run (on a shared 2-core machine it does, by ±30 %) moves both sides of a ratio together.
//! Every pass and every COPY starts after a `CHECKPOINT`, so none of them pays for the previous
//! one's writes.
//!
//! The sandbox runs as a separate process (`sandbox --only retarus`, built with
//! `cargo build -p sandbox --release` unless `SANDBOX_BIN` names a binary), so this process's
//! VmHWM is the loader's own. The peak is reset after the priming load of each size
//! (`/proc/self/clear_refs`), so sizes don't inherit each other's; the baseline's rows go through
//! a file, never this process's memory. Per pass it prints the CPU seconds of the loader, the
//! sandbox and the PostgreSQL backends (on a small machine they share the cores) and the time per
//! stage of the data path (`reporting_etl::stages`; `copy` runs alongside the next page's fetch
//! and decode, `copy_wait` is the loader waiting for it). The last line per size is
//! `ingest records=N rows_per_s=… copy_rows_per_s=… ratio=… peak_rss_mib=… archive_mib=…`
//! (medians, the ratio the median of the passes' paired ratios; the load archives its answers, as every load does by default, and `archive_mib` is
//! the window's archive as stored), then
//! `rebuild records=N rows_per_s=… ratio=… peak_rss_mib=… vs_load=… upstream_calls=…`: the same
//! window re-derived from that archive as `reporting-etl rebuild` does, with the sandbox stopped,
//! into the emptied table as the loads wrote into an empty one (ratio against the same raw COPY,
//! `vs_load` against the load's rows/s, the peak its own).
//!
//! A size is loaded the way a backfill loads it: one window of whole days (at most 40, within
//! Retarus's 45-day limit), 10,000-record pages.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, DurationRound, TimeDelta, Utc};
use futures::StreamExt;
use reporting_etl::datasets::{LoadRequest, ScopeTarget, Tuning, Window};
use reporting_etl::executor::{CallContext, Executor};
use reporting_etl::vendors;
use reporting_etl::vendors::retarus;

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
    cpu: String,
    stages: String,
}

/// User + system CPU seconds of every server process of `db` now, by pid.
async fn backend_cpu(db: &support::TestDb) -> Vec<(String, Option<f64>)> {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            .fetch_all(&db.pool)
            .await
            .unwrap_or_default();
    pids.into_iter()
        .map(|pid| {
            let pid = pid.to_string();
            let cpu = cpu_secs(&pid);
            (pid, cpu)
        })
        .collect()
}

/// Where the sandbox's Retarus answers (kept after the sandbox is stopped: a rebuild must not
/// need it).
#[derive(Clone)]
struct Upstream {
    token_url: String,
    graphql_url: String,
    client_id: String,
    client_secret: String,
}

impl Upstream {
    fn of(sandbox: &SandboxProcess) -> Upstream {
        Upstream {
            token_url: sandbox.field("token_url"),
            graphql_url: sandbox.field("graphql_url"),
            client_id: sandbox.field("client_id"),
            client_secret: sandbox.field("client_secret"),
        }
    }
}

/// The settings and executor a pass loads (or rebuilds) with, on `db`.
fn executor(db: &support::TestDb, upstream: &Upstream) -> (Arc<reporting_etl::config::Settings>, Executor) {
    let text = format!(
        "[database]\nurl = \"{}\"\npool_size = 4\n\n[sources.retarus]\nkind = \"retarus\"\nallow_http = true\n\
         token_url = \"{}\"\ngraphql_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
         customer_ids = [\"99999\"]\nrate_limit = {{ calls = 100000, per_ms = 1000 }}\n",
        db.url, upstream.token_url, upstream.graphql_url, upstream.client_id, upstream.client_secret,
    );
    let (settings, _file) = support::load_config(&text);
    let settings = Arc::new(settings);
    let exec = Executor::new(
        settings.clone(),
        reporting_etl::auth::build(&settings, db.pool.clone()),
    )
    .unwrap();
    (settings, exec)
}

/// Loads the window into a fresh database as a backfill does, spawned on the runtime.
async fn load_pass(sandbox: &SandboxProcess, window: Window) -> Pass {
    let db = support::TestDb::new().await;
    checkpoint(&db).await;
    let (settings, exec) = executor(&db, &Upstream::of(sandbox));
    // Two connections open before the load (the load's and the token store's), so the CPU of
    // the backends serving it can be read before and after.
    let (a, b) = (db.pool.acquire().await.unwrap(), db.pool.acquire().await.unwrap());
    drop((a, b));
    let backends = backend_cpu(&db).await;
    let cpu = (cpu_secs("self"), cpu_secs(&sandbox.pid));
    reporting_etl::stages::reset();
    let pool = db.pool.clone();
    let started = Instant::now();
    let load = spawn_window(settings, exec, pool, window, None);
    let figures = load.await.unwrap().0.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stages = reporting_etl::stages::ALL
        .iter()
        .map(|s| format!("{} {:.2}s", s.name(), s.total().as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ");
    let before: std::collections::HashMap<_, _> = backends.into_iter().collect();
    let postgres: Option<f64> = backend_cpu(&db)
        .await
        .into_iter()
        .map(|(pid, now)| Some(now? - before.get(&pid).copied().flatten().unwrap_or(0.0)))
        .sum();
    let cpu = format!(
        "CPU: loader {} sandbox {} postgres backends {}",
        cpu_delta("self", cpu.0),
        cpu_delta(&sandbox.pid, cpu.1),
        postgres.map_or("n/a".into(), |s| format!("{s:.1}s")),
    );
    Pass {
        db: Some(db),
        rows: figures.rows,
        pages: figures.pages,
        secs,
        cpu,
        stages,
    }
}

/// Loads the window as a backfill does (archived under run 1), or with `rebuild_from`, rebuilds
/// it from the archive of that run; spawned on the runtime as the service runs its jobs. Returns
/// the figures and the upstream requests the executor counted (data and token).
fn spawn_window(
    settings: Arc<reporting_etl::config::Settings>,
    exec: Executor,
    pool: sqlx::PgPool,
    window: Window,
    rebuild_from: Option<i64>,
) -> tokio::task::JoinHandle<(anyhow::Result<reporting_etl::datasets::LoadFigures>, i64)> {
    tokio::spawn(async move {
        let dataset = retarus::datasets::FAX_OUT_UDR.info();
        let scope = ScopeTarget::Customer("99999".into());
        let call = CallContext::new("retarus", "fax_out_udr");
        let request = LoadRequest {
            source_name: "retarus",
            source: &settings.sources["retarus"],
            dataset,
            scope: &scope,
            window: Some(window),
            run_id: if rebuild_from.is_some() { 2 } else { 1 },
            call: &call,
        };
        let tuning = Tuning::default();
        let figures = match rebuild_from {
            Some(run) => vendors::rebuild_window(&exec, &pool, &request, run, &tuning).await,
            None if archive_off() => load_unarchived(&exec, &pool, &request, &tuning).await,
            None => vendors::load_window(&exec, &pool, &request, &tuning).await,
        };
        (figures, call.figures.calls() + call.figures.token_calls())
    })
}

/// `BENCH_ARCHIVE=off`: the loads archive nothing (what the archive costs, against a run without
/// the knob; no rebuild line then, there is nothing to rebuild from).
fn archive_off() -> bool {
    std::env::var("BENCH_ARCHIVE").is_ok_and(|v| v == "off")
}

/// A load as [`vendors::load_window`] runs it, without the archive.
async fn load_unarchived(
    exec: &Executor,
    pool: &sqlx::PgPool,
    request: &LoadRequest<'_>,
    tuning: &Tuning,
) -> anyhow::Result<reporting_etl::datasets::LoadFigures> {
    let mut sink = reporting_etl::datasets::Sink::acquire(pool).await?;
    let mut figures = vendors::load_with(exec, &mut sink, request, tuning).await?;
    let (tx, rows) = sink.begin_swap().await?;
    tx.commit().await?;
    sink.finish();
    figures.rows = rows;
    Ok(figures)
}

/// Rebuilds the window loaded into `db` (archived under run 1 by `vendors::load_window`) from
/// its archive, as `reporting-etl rebuild` does, with the sandbox stopped: rows, seconds and the
/// upstream calls the executor counted (0: nothing could have answered one anyway).
async fn rebuild_pass(db: &support::TestDb, upstream: &Upstream, window: Window) -> (i64, f64, i64) {
    let (settings, exec) = executor(db, upstream);
    let pool = db.pool.clone();
    reporting_etl::stages::reset();
    let started = Instant::now();
    let rebuild = spawn_window(settings, exec, pool, window, Some(1));
    let (figures, calls) = rebuild.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    (figures.unwrap().rows, secs, calls)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Writes the dirty pages of every database to disk, so what is measured next does not pay for
/// what was measured before (a checkpoint that falls inside one pass and not another is noise of
/// seconds at 1M rows). Needs a superuser; without one, the run goes on unflushed.
async fn checkpoint(db: &support::TestDb) {
    if let Err(error) = sqlx::query("CHECKPOINT").execute(&db.pool).await {
        eprintln!("CHECKPOINT refused ({error}); the figures are noisier");
    }
}

/// The raw-COPY baseline: the loaded rows, dumped once to a temporary file (not this process's
/// memory), COPYed on demand into a fresh table identical to the target in a database of its own.
struct Baseline {
    db: support::TestDb,
    table: &'static str,
    rows: i64,
    file: std::fs::File,
}

impl Baseline {
    async fn dump(from: &support::TestDb, table: &'static str, rows: i64) -> Baseline {
        use std::io::Write;
        let mut file = tempfile::tempfile().expect("a temporary file for the COPY text");
        let mut conn = from.pool.acquire().await.unwrap();
        let mut dump = conn
            .copy_out_raw(&format!("COPY {table} TO STDOUT"))
            .await
            .unwrap();
        while let Some(chunk) = dump.next().await {
            file.write_all(&chunk.unwrap()).unwrap();
        }
        drop(dump);
        Baseline {
            db: support::TestDb::new().await,
            table,
            rows,
            file,
        }
    }

    /// Rows per second of one COPY into a fresh table identical to the target.
    async fn copy_rate(&mut self) -> f64 {
        use std::io::{Read, Seek};
        checkpoint(&self.db).await;
        let mut conn = self.db.pool.acquire().await.unwrap();
        let create = format!("CREATE TABLE bench_raw (LIKE {} INCLUDING ALL)", self.table);
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut *conn)
            .await
            .unwrap();
        self.file.rewind().unwrap();
        let started = Instant::now();
        let mut copy = conn.copy_in_raw("COPY bench_raw FROM STDIN").await.unwrap();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = self.file.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            copy.send(&buffer[..n]).await.unwrap();
        }
        let copied = copy.finish().await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(copied as i64, self.rows);
        sqlx::query("DROP TABLE bench_raw")
            .execute(&mut *conn)
            .await
            .unwrap();
        copied as f64 / secs
    }
}

async fn run(records: u64, passes: usize, binary: &str) {
    let days: u64 = (records / 25_000).clamp(4, 40);
    let per_day = records.div_ceil(days);
    let anchor = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let sandbox = SandboxProcess::start(binary, anchor, days + 2, per_day);
    let upstream = Upstream::of(&sandbox);
    // Whole days before the anchor's day: every one holds exactly `per_day` records.
    let last_day = anchor.duration_trunc(TimeDelta::days(1)).unwrap();
    let window = Window::new(last_day - Duration::days(days as i64), last_day);

    // The priming load: the sandbox generates every page and remembers its answer, so the
    // measured loads get them as stored bytes.
    let priming = load_pass(&sandbox, window).await;
    println!(
        "records={records}: priming load (sandbox generating) {:.1}s, {}",
        priming.secs, priming.cpu
    );
    let priming_db = priming.db.as_ref().expect("the priming load's database");
    let mut baseline = Baseline::dump(priming_db, "retarus.fax_out_udr", priming.rows).await;
    drop(priming);
    // The peak so far belongs to set-up, the priming load or an earlier size.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut measured = Vec::new();
    let mut copy_rates = vec![baseline.copy_rate().await];
    let mut ratios = Vec::new();
    for n in 1..=passes {
        let mut pass = load_pass(&sandbox, window).await;
        let copy_after = baseline.copy_rate().await;
        let copy_around = (copy_rates[n - 1] + copy_after) / 2.0;
        copy_rates.push(copy_after);
        let rate = pass.rows as f64 / pass.secs;
        ratios.push(rate / copy_around);
        println!(
            "  pass {n}: {:.1}s = {rate:.0} rows/s, {} pages, ratio {:.3} (raw COPY {:.0} before, {copy_after:.0} after); {}\n    stages: {}",
            pass.secs,
            pass.pages,
            rate / copy_around,
            copy_rates[n - 1],
            pass.cpu,
            pass.stages
        );
        if n < passes {
            drop(pass.db.take());
        }
        measured.push(pass);
    }
    let hwm_kib = status_kib("self", "VmHWM:");
    drop(sandbox);
    let rows = measured[0].rows;
    for pass in &measured {
        assert_eq!(
            pass.rows as u64,
            days * per_day,
            "the load wrote every generated record"
        );
    }
    let mut rates: Vec<f64> = measured.iter().map(|p| p.rows as f64 / p.secs).collect();
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let rate = median(&mut rates);
    let db = measured
        .last()
        .and_then(|p| p.db.as_ref())
        .expect("the last pass's database");
    let copy_runs = copy_rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    let copy_rate = median(&mut copy_rates);
    let ratio = median(&mut ratios);
    if archive_off() {
        println!(
            "ingest records={records} rows_per_s={rate:.0} copy_rows_per_s={copy_rate:.0} ratio={ratio:.3} peak_rss_mib={} archive=off",
            hwm_kib / 1024,
        );
        return;
    }
    let (archived, received): (i64, i64) =
        sqlx::query_as("SELECT stored_bytes, raw_bytes FROM archive.windows WHERE run_id = 1")
            .fetch_one(&db.pool)
            .await
            .expect("the load archived its answers");
    let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "  {rows} rows in one window of {days}d x {per_day}/day; ingest rows/s min {min:.0} median {rate:.0} \
         over {passes} passes; raw COPY into a fresh identical table around them {copy_runs} rows/s (median {copy_rate:.0}); \
         peak {}",
        if reset {
            "reset after priming"
        } else {
            "not reset (no /proc/self/clear_refs)"
        }
    );
    println!(
        "  archive: {:.1} MiB received, {:.1} MiB stored (zstd level {})",
        mib(received),
        mib(archived),
        reporting_etl::archive::LEVEL
    );
    // The rebuild: the sandbox is stopped (no answer could come from it), the peak is its own.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut rebuild_rates = Vec::new();
    let mut upstream_calls = 0;
    for n in 1..=passes {
        // Into an emptied table, as the loads wrote into an empty one: what is measured is the
        // data path, not the deletion of the window's previous rows (which a reload pays too).
        sqlx::query("TRUNCATE retarus.fax_out_udr")
            .execute(&db.pool)
            .await
            .unwrap();
        let (rebuilt, secs, calls) = rebuild_pass(db, &upstream, window).await;
        assert_eq!(rebuilt, rows, "the rebuild wrote every archived record");
        upstream_calls += calls;
        let stages = reporting_etl::stages::ALL
            .iter()
            .map(|s| format!("{} {:.2}s", s.name(), s.total().as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  rebuild pass {n}: {secs:.1}s = {:.0} rows/s, {calls} upstream calls\n    stages: {stages}",
            rebuilt as f64 / secs
        );
        rebuild_rates.push(rebuilt as f64 / secs);
    }
    let rebuild_hwm_kib = status_kib("self", "VmHWM:");
    let rebuild_rate = median(&mut rebuild_rates);
    println!(
        "ingest records={records} rows_per_s={rate:.0} copy_rows_per_s={copy_rate:.0} ratio={ratio:.3} peak_rss_mib={} archive_mib={:.1}",
        hwm_kib / 1024,
        mib(archived)
    );
    println!(
        "rebuild records={rows} rows_per_s={rebuild_rate:.0} ratio={:.3} peak_rss_mib={} vs_load={:.2} upstream_calls={upstream_calls}{}",
        rebuild_rate / copy_rate,
        rebuild_hwm_kib / 1024,
        rebuild_rate / rate,
        if reset { "" } else { " (peak not reset)" }
    );
}

fn main() {
    // As the binary does at startup: the allocator it ships with, configured the same way.
    reporting_etl::allocator::tune();
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
    let passes = std::env::var("BENCH_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(2);
    let binary = sandbox_binary();
    // Multi-threaded like the service's runtime (its jobs run in spawned tasks).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for size in sizes {
        runtime.block_on(run(size, passes, &binary));
    }
}
