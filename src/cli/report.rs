//! What the read-only commands print: `check`'s summary, `jobs`, `runs` (with the shared rate
//! budget per source and process) and `auth status`, each as a table.

use chrono::Utc;

use super::table::Table;
use crate::auth;
use crate::config::Settings;
use crate::executor::shared_budget;
use crate::jobs::schedule;
use crate::store::runs;

pub(super) fn auth_status_table(rows: &[auth::StatusRow]) -> String {
    let time = |t: Option<chrono::DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    let mut table = Table::new([
        "SOURCE",
        "FLOW",
        "STATE",
        "TOKEN EXPIRES",
        "LAST REFRESH",
        "CHAIN AGE",
        "REFRESH TOKEN",
    ]);
    for row in rows {
        let age = row.chain_started_at.map(|start| {
            let age = Utc::now() - start;
            format!("{}d {}h", age.num_days(), age.num_hours() % 24)
        });
        table.row([
            row.source.clone(),
            row.flow.to_string(),
            row.state.clone(),
            time(row.expires_at),
            time(row.last_refresh_at),
            age.unwrap_or_default(),
            if row.has_refresh_token {
                "stored".into()
            } else {
                String::new()
            },
        ]);
    }
    table.render()
}

/// `check`'s output: sources with kind, flow, endpoints and limit; jobs with their schedule.
pub(super) fn check_summary(settings: &Settings) -> String {
    let mut out = String::from("Configuration is valid.\n\n");
    let mut sources = Table::new(["SOURCE", "KIND", "AUTH", "RATE LIMIT", "ENDPOINTS"]);
    for (name, source) in &settings.sources {
        let limit = source.rate_limit();
        let endpoints = source
            .endpoints()
            .iter()
            .map(|(key, url)| format!("{key}={url}"))
            .collect::<Vec<_>>()
            .join(" ");
        sources.row([
            name.clone(),
            source.kind().to_string(),
            source.flow().to_string(),
            format!("{} per {} ms", limit.calls, limit.per_ms),
            endpoints,
        ]);
    }
    out.push_str(&format!(
        "Sources ({}):\n{}\n",
        settings.sources.len(),
        sources.render()
    ));
    out.push_str(&format!(
        "Jobs ({}):\n{}",
        settings.jobs.len(),
        jobs_table(settings, &Default::default())
    ));
    let database = if settings.database.url.is_some() {
        "database.url (configured)".to_owned()
    } else {
        format!("embedded server in {}", settings.database.data_dir.display())
    };
    out.push_str(&format!("\nDatabase: {database}\n"));
    out
}

/// Configured jobs; `last` maps a job to its latest outcome (empty when not looked up).
pub(super) fn jobs_table(settings: &Settings, last: &std::collections::HashMap<String, String>) -> String {
    let now = Utc::now();
    let mut table = Table::new([
        "JOB",
        "SOURCE",
        "DATASET",
        "SCOPE",
        "WINDOW",
        "SCHEDULE",
        "NEXT (LOCAL)",
        "NEXT (UTC)",
        "LAST OUTCOME",
    ]);
    for (name, job) in &settings.jobs {
        let window = job
            .window
            .unwrap_or(job.dataset.info().default_window)
            .to_string();
        let next = job
            .enabled
            .then(|| schedule::next_fire(&job.schedule, job.time_zone, now))
            .flatten();
        table.row([
            name.clone(),
            job.source.clone(),
            job.dataset.to_string(),
            job.scope.to_string(),
            window,
            format!("{} ({})", job.schedule.expression(), job.time_zone),
            next.map(|t| {
                t.with_timezone(&job.time_zone.0)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .unwrap_or_else(|| {
                if job.enabled {
                    "never".into()
                } else {
                    "disabled".into()
                }
            }),
            next.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_default(),
            last.get(name).cloned().unwrap_or_default(),
        ]);
    }
    table.render()
}

/// The shared rate budget per source and process: calls made and time spent waiting for budget.
pub(super) fn budget_table(rows: &[shared_budget::UsageRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut table = Table::new([
        "SOURCE",
        "PROCESS",
        "COMMAND",
        "STATE",
        "CALLS",
        "WAITED",
        "FALLBACK CALLS",
        "LAST CALL",
    ]);
    for row in rows {
        table.row([
            row.source.clone(),
            format!("{} pid {}", row.hostname, row.pid),
            row.command.clone(),
            if row.running { "running" } else { "stopped" }.to_owned(),
            row.calls.to_string(),
            format!("{:.1}s", row.waited_ms as f64 / 1000.0),
            row.fallback_calls.to_string(),
            row.last_call_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        ]);
    }
    format!(
        "\nRate budget shared by every process on this database:\n{}",
        table.render()
    )
}

/// The archive's size per source and dataset (`reporting-etl rebuild` re-derives from it).
pub(super) fn archive_table(rows: &[crate::archive::store::DatasetSize]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mib = |bytes: i64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    let mut table = Table::new(["SOURCE", "DATASET", "WINDOWS", "ANSWERS", "RECEIVED", "STORED"]);
    for row in rows {
        table.row([
            row.source.clone(),
            row.dataset.clone(),
            row.windows.to_string(),
            row.pages.to_string(),
            mib(row.raw_bytes),
            mib(row.stored_bytes),
        ]);
    }
    format!(
        "
Archive (answers kept for rebuilds, compressed):
{}",
        table.render()
    )
}

/// Each source's limit: configured, and as the upstream's headers announce it when they differ
/// (the headers win), plus a block in force (a `Retry-After`, an exhausted window).
pub(super) fn limits_table(rows: &[shared_budget::LimitRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let per = |calls: i64, window_ms: i64| format!("{calls} per {}s", window_ms as f64 / 1000.0);
    let mut table = Table::new(["SOURCE", "CONFIGURED", "UPSTREAM ANNOUNCES", "BLOCKED UNTIL"]);
    for row in rows {
        let announced = match (row.announced_limit, row.announced_window_ms) {
            (None, None) => "as configured".to_owned(),
            (limit, window) => per(
                i64::from(limit.unwrap_or(row.calls)),
                window.unwrap_or(row.window_ms),
            ),
        };
        table.row([
            row.source.clone(),
            per(i64::from(row.calls), row.window_ms),
            announced,
            row.blocked_until
                .map(|at| at.format("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    format!(
        "\nRate limits (the upstream's headers win over the configuration):\n{}",
        table.render()
    )
}

pub(super) fn runs_table(rows: &[runs::RunRow]) -> String {
    let mut table = Table::new([
        "ID",
        "JOB",
        "DATASET",
        "SCOPE",
        "WINDOW",
        "TRIGGER",
        "STATUS",
        "KIND",
        "ROWS",
        "CALLS",
        "DATA/DISC/TOKEN/RETRY",
        "RETRIES",
        "DURATION",
        "ERROR",
    ]);
    for run in rows {
        let window = match (run.window_start, run.window_end) {
            (Some(start), Some(end)) => format!(
                "{} → {}",
                start.format("%Y-%m-%d %H:%M"),
                end.format("%Y-%m-%d %H:%M")
            ),
            _ => "snapshot".into(),
        };
        let duration = run
            .finished_at
            .map(|end| {
                format!(
                    "{:.1}s",
                    (end - run.started_at).num_milliseconds() as f64 / 1000.0
                )
            })
            .unwrap_or_else(|| "…".into());
        table.row([
            run.id.to_string(),
            run.job.clone(),
            run.dataset.clone(),
            run.scope.clone(),
            window,
            run.trigger.clone(),
            run.status.clone(),
            run.error_kind.clone().unwrap_or_default(),
            run.rows_written.to_string(),
            run.upstream_calls.to_string(),
            // What the calls were for; they add up to CALLS (see etl.runs.data_calls …).
            format!(
                "{}/{}/{}/{}",
                run.data_calls, run.discovery_calls, run.token_calls, run.retry_calls
            ),
            run.retries.to_string(),
            duration,
            run.error.clone().unwrap_or_default(),
        ]);
    }
    if rows.is_empty() {
        return "No runs recorded yet.\n".into();
    }
    table.render()
}
