//! Which time range a run covers: incremental from the watermark (minus a lookback), a trailing
//! period, a snapshot, or an explicit backfill range — bounded by the vendor's history limit and
//! ending a few minutes in the past so only closed windows are read.

use chrono::{DateTime, Duration, DurationRound, NaiveDate, TimeDelta, Utc};

use crate::catalog::{DatasetInfo, WindowPolicy};
use crate::config::JobSettings;

/// Only closed windows are read: offset paging over a window still receiving records can skip
/// or repeat rows (see `docs/vendors/retarus.md`, "Inferred by us").
pub const CLOSED_DELAY: TimeDelta = TimeDelta::minutes(5);

/// The overall range a run of `job` covers now, or `None` for snapshots. Datasets then split it
/// into the vendor's legal window sizes.
pub fn run_range(
    job: &JobSettings,
    dataset: &DatasetInfo,
    watermark: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let policy = job.window.unwrap_or(dataset.default_window);
    let end = now - CLOSED_DELAY;
    let floor = ceil_minute(now - dataset.history_limit);
    // Configuration bounds keep these in range; checked anyway, so no value can panic here: a
    // start before chrono's first instant is before the floor too.
    let before = |at: DateTime<Utc>, delta: Option<TimeDelta>| {
        delta
            .and_then(|delta| at.checked_sub_signed(delta))
            .unwrap_or(floor)
    };
    let start = match policy {
        WindowPolicy::Snapshot => return None,
        WindowPolicy::Trailing => before(now, Duration::try_days(i64::from(job.trailing_days.unwrap_or(1)))),
        WindowPolicy::Incremental => match watermark {
            Some(mark) => before(mark, Duration::try_minutes(i64::from(job.lookback_minutes))),
            None => job.start.map(midnight).unwrap_or_else(|| now - dataset.first_run),
        },
    };
    let start = start.max(floor);
    let (start, end) = align(dataset, start, end);
    (start < end).then_some((start, end))
}

/// A backfill `[from, to)` in UTC dates, bounded by the vendor's history limit and closed windows.
pub fn backfill_range(
    dataset: &DatasetInfo,
    from: NaiveDate,
    to: NaiveDate,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = midnight(from).max(ceil_minute(now - dataset.history_limit));
    let end = midnight(to).min(now - CLOSED_DELAY);
    let (start, end) = align(dataset, start, end);
    (start < end).then_some((start, end))
}

/// Daily datasets (local-day sales) work on whole days: start at a UTC midnight, end at the next.
/// Others are aligned to the minute so repeated runs produce identical windows.
fn align(dataset: &DatasetInfo, start: DateTime<Utc>, end: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    if dataset.daily {
        let day = TimeDelta::days(1);
        let start = start.duration_trunc(day).unwrap_or(start);
        let end_floor = end.duration_trunc(day).unwrap_or(end);
        let end = if end_floor == end { end } else { end_floor + day };
        (start, end)
    } else {
        let minute = TimeDelta::minutes(1);
        (
            start.duration_trunc(minute).unwrap_or(start),
            end.duration_trunc(minute).unwrap_or(end),
        )
    }
}

/// The limit rounded up, so aligning a window's start to the minute never crosses it.
fn ceil_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    let minute = TimeDelta::minutes(1);
    let floor = at.duration_trunc(minute).unwrap_or(at);
    if floor == at { at } else { floor + minute }
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CronSchedule, Scope, TimeZone};
    use crate::vendors::retarus::datasets::FAX_OUT_UDR;
    use crate::vendors::roubler::datasets::{LOCATION_SALES, LOCATIONS};
    use chrono::TimeZone as _;

    fn job(window: Option<WindowPolicy>) -> JobSettings {
        JobSettings {
            source: "s".into(),
            dataset: FAX_OUT_UDR,
            schedule: CronSchedule::parse("0 0 * * * *").unwrap(),
            time_zone: TimeZone::default(),
            scope: Scope::All,
            window,
            lookback_minutes: 60,
            trailing_days: Some(7),
            start: None,
            enabled: true,
            window_deadline_secs: 1800,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 34, 56).unwrap()
    }

    #[test]
    fn an_incremental_run_starts_a_lookback_before_the_watermark_and_ends_in_the_past() {
        let fax = FAX_OUT_UDR.info();
        let mark = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let (start, end) = run_range(&job(None), fax, Some(mark), now()).unwrap();
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 11, 23, 12, 29, 0).unwrap());
    }

    #[test]
    fn a_first_retarus_run_never_reaches_past_the_history_limit() {
        let fax = FAX_OUT_UDR.info();
        let mut job = job(None);
        job.start = NaiveDate::from_ymd_opt(2026, 1, 1);
        let (start, _) = run_range(&job, fax, None, now()).unwrap();
        assert!(now() - start <= Duration::days(89), "{start}");
    }

    #[test]
    fn the_largest_trailing_and_lookback_values_do_not_overflow() {
        let fax = FAX_OUT_UDR.info();
        let mut job = job(Some(WindowPolicy::Trailing));
        job.trailing_days = Some(u32::MAX);
        let (start, _) = run_range(&job, fax, None, now()).unwrap();
        assert_eq!(start, now() - Duration::days(89) + Duration::seconds(4));
        job.window = None;
        job.lookback_minutes = u32::MAX;
        let mark = DateTime::<Utc>::MIN_UTC + Duration::days(1);
        let (start, _) = run_range(&job, fax, Some(mark), now()).unwrap();
        assert_eq!(start, now() - Duration::days(89) + Duration::seconds(4));
    }

    #[test]
    fn snapshots_have_no_range_and_sales_use_whole_utc_days() {
        let locations = LOCATIONS.info();
        assert!(run_range(&job(None), locations, None, now()).is_none());
        let sales = LOCATION_SALES.info();
        let (start, end) = run_range(&job(Some(WindowPolicy::Trailing)), sales, None, now()).unwrap();
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 11, 16, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap());
    }
}
