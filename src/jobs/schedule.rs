//! Fire times of a job's schedule in its own time zone.
//!
//! tokio-cron-scheduler freezes a zone into a fixed UTC offset when a job is created, so a job
//! at 02:30 Europe/Berlin would fire an hour off after a DST change. We compute every next fire
//! time ourselves, in the job's zone, from the current instant: across a change the local time
//! stays right (a time skipped by a spring-forward fires at the next valid instant; a time that
//! occurs twice in autumn fires once).

use chrono::{DateTime, Utc};

use crate::config::{CronSchedule, TimeZone};

/// The first fire time strictly after `after`, in UTC. `None` if the schedule never fires again.
pub fn next_fire(schedule: &CronSchedule, zone: TimeZone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&zone.0);
    schedule
        .cron()
        .find_next_occurrence(&local, false)
        .ok()
        .map(|next| next.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn berlin_0230() -> (CronSchedule, TimeZone) {
        (
            CronSchedule::parse("0 30 2 * * *").unwrap(),
            TimeZone::parse("Europe/Berlin").unwrap(),
        )
    }

    #[test]
    fn a_berlin_job_fires_at_local_time_before_and_after_the_autumn_change() {
        let (schedule, zone) = berlin_0230();
        // 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET.
        let before = Utc.with_ymd_and_hms(2026, 10, 23, 12, 0, 0).unwrap();
        let first = next_fire(&schedule, zone, before).unwrap();
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 10, 24, 0, 30, 0).unwrap()); // 02:30 CEST
        let second = next_fire(&schedule, zone, first).unwrap();
        // 02:30 happens twice on the 25th; it fires once, at the first.
        assert_eq!(second, Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap());
        let third = next_fire(&schedule, zone, second).unwrap();
        assert_eq!(third, Utc.with_ymd_and_hms(2026, 10, 26, 1, 30, 0).unwrap()); // 02:30 CET
    }

    #[test]
    fn a_berlin_job_in_the_skipped_spring_hour_fires_once_that_day_at_the_first_valid_instant() {
        let (schedule, zone) = berlin_0230();
        // 2026-03-29: clocks jump from 02:00 CET to 03:00 CEST; 02:30 does not exist. The module
        // promises the next valid instant: 03:00 CEST, which is 01:00Z.
        let before = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        let fire = next_fire(&schedule, zone, before).unwrap();
        assert_eq!(fire, Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap());
        let next = next_fire(&schedule, zone, fire).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 3, 30, 0, 30, 0).unwrap()); // 02:30 CEST
    }

    /// Day-of-month and day-of-week restricted together must BOTH match (the README documents
    /// this; classic Vixie cron would fire on either).
    #[test]
    fn day_of_month_and_day_of_week_together_fire_only_on_days_matching_both() {
        let schedule = CronSchedule::parse("0 0 9 13 * FRI").unwrap();
        let mut after = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut fires = Vec::new();
        for _ in 0..3 {
            after = next_fire(&schedule, TimeZone::parse("UTC").unwrap(), after).unwrap();
            fires.push(after);
        }
        // The Fridays the 13th of 2026; not every 13th, not every Friday.
        assert_eq!(
            fires,
            [
                Utc.with_ymd_and_hms(2026, 2, 13, 9, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 3, 13, 9, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 11, 13, 9, 0, 0).unwrap(),
            ]
        );
    }

    #[test]
    fn day_of_month_alone_or_day_of_week_alone_fires_on_every_matching_day() {
        let utc = TimeZone::parse("UTC").unwrap();
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let thirteenth = CronSchedule::parse("0 0 9 13 * *").unwrap();
        let first = next_fire(&thirteenth, utc, start).unwrap();
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 1, 13, 9, 0, 0).unwrap()); // a Tuesday
        let friday = CronSchedule::parse("0 0 9 * * FRI").unwrap();
        let first = next_fire(&friday, utc, start).unwrap();
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 1, 2, 9, 0, 0).unwrap()); // the 2nd
    }
}
