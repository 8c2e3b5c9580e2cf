//! The executor's metrics, through the `metrics` facade (exported by `/metrics`), and the same
//! figures added to the caller's [`CallFigures`] for the run record.
//!
//! Labels are low-cardinality on purpose: `source` (configured names), `status` (a class such as
//! `2xx`, `429`, `transport`) and `outcome` (a fixed set). Never a scope id, URL or dataset page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::CallFigures;

pub const CALLS_TOTAL: &str = "reporting_etl_upstream_calls_total";
pub const RETRIES_TOTAL: &str = "reporting_etl_upstream_retries_total";
pub const THROTTLED_SECONDS_TOTAL: &str = "reporting_etl_upstream_throttled_seconds_total";
pub const BYTES_TOTAL: &str = "reporting_etl_upstream_bytes_total";

/// The `status` label: the classes that matter for alerting, not every code.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "transport",
        Some(401) => "401",
        Some(403) => "403",
        Some(429) => "429",
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
    }
}

/// One request that was sent (whatever came back); `repeat`: it repeated an earlier attempt of
/// the same call.
pub fn call(
    figures: &CallFigures,
    repeat: bool,
    source: &str,
    status: &'static str,
    outcome: &'static str,
    bytes: usize,
) {
    figures.calls.fetch_add(1, Ordering::Relaxed);
    if repeat {
        figures.repeated.fetch_add(1, Ordering::Relaxed);
    }
    figures.bytes.fetch_add(bytes as i64, Ordering::Relaxed);
    metrics::counter!(CALLS_TOTAL, "source" => source.to_owned(), "status" => status, "outcome" => outcome)
        .increment(1);
    metrics::counter!(BYTES_TOTAL, "source" => source.to_owned()).increment(bytes as u64);
}

/// Requests to the token endpoint made while getting a call its credential.
pub fn token_calls(figures: &CallFigures, requests: u32) {
    if requests > 0 {
        figures
            .token_calls
            .fetch_add(i64::from(requests), Ordering::Relaxed);
    }
}

/// One retry about to happen.
pub fn retry(figures: &CallFigures, source: &str) {
    figures.retries.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(RETRIES_TOTAL, "source" => source.to_owned()).increment(1);
}

/// Time spent waiting for the source's rate budget (limiter slots and `Retry-After`).
/// `source_total_ms` is the source's running total: the facade's counters are integers, so the
/// seconds counter is set from the exact total instead of adding rounded pieces.
pub fn throttled(figures: &CallFigures, source: &str, waited: Duration, source_total_ms: &AtomicU64) {
    if waited.is_zero() {
        return;
    }
    let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
    figures
        .throttled_ms
        .fetch_add(i64::try_from(ms).unwrap_or(i64::MAX), Ordering::Relaxed);
    let total = source_total_ms
        .fetch_add(ms, Ordering::Relaxed)
        .saturating_add(ms);
    metrics::counter!(THROTTLED_SECONDS_TOTAL, "source" => source.to_owned()).absolute(total / 1000);
}
