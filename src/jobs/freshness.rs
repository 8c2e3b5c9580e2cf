//! What `/metrics` needs to judge freshness and authorisation, beyond the runner's counters:
//! each job's expected interval (the longest gap its schedule leaves between two fires), the
//! last success of every job and scope as recorded in `etl.runs` (so a restarted service does
//! not forget it), and which sources wait for a person to re-authorise them.
//!
//! The shipped alert rules (`deploy/prometheus/alerts.yml`) compare these: a dataset is stale
//! when its last success is older than twice its expected interval.

use anyhow::Result;
use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use crate::config::Settings;
use crate::jobs::schedule::next_fire;

pub const EXPECTED_INTERVAL: &str = "reporting_etl_job_expected_interval_seconds";
pub const LAST_SUCCESS: &str = "reporting_etl_last_success_timestamp_seconds";
pub const REAUTHORIZATION_REQUIRED: &str = "reporting_etl_source_reauthorization_required";

/// How far ahead the expected interval looks: a week covers weekday-only and weekly schedules.
const LOOKAHEAD: Duration = Duration::days(8);
/// At most this many fires are walked (a schedule firing every second stops early).
const MAX_FIRES: usize = 2000;

/// The longest gap between consecutive fires of a schedule in the [`LOOKAHEAD`] after `now`.
/// `None` when it fires fewer than twice in that time.
pub fn expected_interval(
    schedule: &crate::config::CronSchedule,
    zone: crate::config::TimeZone,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let mut previous = next_fire(schedule, zone, now)?;
    let mut longest: Option<Duration> = None;
    for _ in 0..MAX_FIRES {
        let Some(next) = next_fire(schedule, zone, previous) else {
            break;
        };
        let gap = next - previous;
        longest = Some(longest.map_or(gap, |l| l.max(gap)));
        if next - now > LOOKAHEAD {
            break;
        }
        previous = next;
    }
    longest
}

/// Sets the expected-interval gauge of every enabled job.
pub fn publish_expected_intervals(settings: &Settings) {
    let now = Utc::now();
    for (name, job) in settings.jobs.iter().filter(|(_, job)| job.enabled) {
        if let Some(interval) = expected_interval(&job.schedule, job.time_zone, now) {
            metrics::gauge!(EXPECTED_INTERVAL, "job" => name.clone()).set(interval.num_seconds() as f64);
        }
    }
}

/// Sets the last-success gauge of every job and scope from the run records.
pub async fn publish_recorded_successes(pool: &PgPool) -> Result<()> {
    for (job, scope, at) in crate::store::runs::last_successes(pool).await? {
        metrics::gauge!(LAST_SUCCESS, "job" => job, "scope" => scope).set(at.timestamp() as f64);
    }
    Ok(())
}

/// Sets, per source with stored tokens, 1 when it waits for `auth login` and 0 otherwise.
pub async fn publish_reauthorization(pool: &PgPool) -> Result<()> {
    for (source, required) in crate::auth::store::login_required(pool).await? {
        metrics::gauge!(REAUTHORIZATION_REQUIRED, "source" => source).set(f64::from(u8::from(required)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CronSchedule, TimeZone};

    fn interval(expression: &str) -> i64 {
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, 12, 0, 0).unwrap();
        expected_interval(
            &CronSchedule::parse(expression).unwrap(),
            TimeZone::parse("Europe/Berlin").unwrap(),
            now,
        )
        .unwrap()
        .num_seconds()
    }

    #[test]
    fn the_expected_interval_is_the_longest_gap_of_the_schedule() {
        assert_eq!(interval("*/2 * * * * *"), 2);
        assert_eq!(interval("0 0 6 * * *"), 86_400);
        // Weekdays only: Friday 06:00 to Monday 06:00.
        assert_eq!(interval("0 0 6 * * Mon-Fri"), 3 * 86_400);
    }
}
