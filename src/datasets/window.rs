//! Windows: the half-open UTC ranges a load covers, cut to what each vendor accepts in one
//! request, and the local-day arithmetic of datasets whose rows are local calendar days.
//!
//! Everything here is a pure function of its arguments (the clock is passed in), so the legal
//! sizes and the DST handling are tested without an upstream.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::DatasetInfo;
use crate::config::SourceKind;

/// A half-open `[start, end)` range of UTC instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Window {
        Window { start, end }
    }

    pub fn len(&self) -> TimeDelta {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// The calendar dates `[first, last)` a daily dataset reads for this window: the UTC date of
    /// `start`, up to the UTC date of `end` (rounded up when `end` is not a midnight, so a
    /// partial last day is included rather than lost).
    pub fn dates(&self) -> (NaiveDate, NaiveDate) {
        let first = self.start.date_naive();
        let last = if self.end.time() == chrono::NaiveTime::MIN {
            self.end.date_naive()
        } else {
            self.end.date_naive() + Duration::days(1)
        };
        (first, last.max(first))
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}, {})",
            self.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// Retarus: one request covers at most 45 days (documented).
pub const RETARUS_MAX_SPAN: TimeDelta = TimeDelta::days(45);
/// Retarus keeps 90 days of data, measured from the moment the request arrives (documented).
pub const RETARUS_RETENTION: TimeDelta = TimeDelta::days(90);
/// Margin kept inside the retention so a window computed now is still legal when its request is
/// sent (and retried) a little later.
pub const RETARUS_RETENTION_MARGIN: TimeDelta = TimeDelta::hours(1);
/// Roubler documents no limit; a week per call keeps timesheet and shift answers small, as the
/// vendor notes suggest.
pub const ROUBLER_WORK_SPAN: TimeDelta = TimeDelta::days(7);
/// Roubler daily sales: one row per day and location, so a month per call is small.
pub const ROUBLER_SALES_SPAN: TimeDelta = TimeDelta::days(31);

/// The longest window a dataset may be asked for in one load, `None` for no limit.
pub fn max_span(dataset: &DatasetInfo) -> Option<TimeDelta> {
    match (dataset.kind, dataset.name) {
        (SourceKind::Retarus, _) => Some(RETARUS_MAX_SPAN),
        (SourceKind::Roubler, "location_sales") => Some(ROUBLER_SALES_SPAN),
        (SourceKind::Roubler, "timesheets" | "shifts") => Some(ROUBLER_WORK_SPAN),
        _ => None,
    }
}

/// `[start, end)` cut into consecutive windows of legal size for `dataset`, with the vendor's
/// history limit applied against the real clock.
pub fn split_windows(dataset: &DatasetInfo, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Window> {
    split_windows_at(dataset, start, end, Utc::now())
}

/// [`split_windows`] with the clock passed in.
///
/// - Retarus: the start is raised to `now - 90 days` (plus a margin), then cut into 45-day pieces.
/// - Roubler `location_sales`: widened to whole UTC days (its rows are days), then 31-day pieces.
/// - Roubler `timesheets` / `shifts`: 7-day pieces.
/// - Anything else: one window.
pub fn split_windows_at(
    dataset: &DatasetInfo,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Window> {
    let (mut start, mut end) = (start, end);
    if dataset.kind == SourceKind::Retarus {
        start = start.max(now - RETARUS_RETENTION + RETARUS_RETENTION_MARGIN);
    }
    if dataset.kind == SourceKind::Roubler && dataset.name == "location_sales" {
        let (first, last) = Window::new(start, end).dates();
        start = utc_midnight(first);
        end = utc_midnight(last);
    }
    if start >= end {
        return Vec::new();
    }
    let Some(span) = max_span(dataset) else {
        return vec![Window::new(start, end)];
    };
    let mut windows = Vec::new();
    let mut from = start;
    while from < end {
        let to = (from + span).min(end);
        windows.push(Window::new(from, to));
        from = to;
    }
    windows
}

/// The UTC instant of midnight at the start of `day` in UTC.
pub fn utc_midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The UTC instant a local wall-clock time denotes in `tz`. In a DST gap (the time does not
/// exist) the first valid instant after it; in an overlap (it exists twice) the earlier one.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    // Gaps are at most a few hours; walk forward in quarter hours until the time exists.
    for step in 0..=16 {
        let candidate = local + Duration::minutes(15 * step);
        if let Some(at) = tz.from_local_datetime(&candidate).earliest() {
            return at.with_timezone(&Utc);
        }
    }
    // No real zone has a gap of four hours; reading the wall time as UTC is the least-bad answer.
    local.and_utc()
}

/// The UTC instant local day `day` starts at in `tz`.
pub fn local_midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    local_to_utc(tz, day.and_time(chrono::NaiveTime::MIN))
}

/// The UTC range `[local midnight of the first date, local midnight of the last date)` covering
/// a daily window's dates in `tz`: what a location's `locationSales(startTime, endTime)` is asked
/// for, so that it answers exactly the local days `window.dates()`.
pub fn local_day_range(tz: Tz, window: &Window) -> (DateTime<Utc>, DateTime<Utc>) {
    let (first, last) = window.dates();
    (local_midnight(tz, first), local_midnight(tz, last))
}
