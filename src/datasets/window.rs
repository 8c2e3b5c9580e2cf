//! Windows: the half-open UTC ranges a load covers, cut to what each vendor accepts in one
//! request, and the local-day arithmetic of datasets whose rows are local calendar days.
//!
//! Everything here is a pure function of its arguments (the clock is passed in), so the legal
//! sizes and the DST handling are tested without an upstream.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::catalog::DatasetInfo;

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

/// `[start, end)` cut into consecutive windows of legal size for `dataset`, with the vendor's
/// history limit applied against the real clock.
pub(crate) fn split_windows(dataset: &DatasetInfo, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Window> {
    split_windows_at(dataset, start, end, Utc::now())
}

/// [`split_windows`] with the clock passed in.
///
/// The start is raised to the dataset's history limit before `now`; daily datasets are widened to
/// whole UTC days (their rows are days); the range is then cut into pieces of the dataset's
/// `max_span`, or left whole when it has none (all facts from [`crate::catalog`]).
pub fn split_windows_at(
    dataset: &DatasetInfo,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Window> {
    let (mut start, mut end) = (start, end);
    start = start.max(now - dataset.history_limit);
    if dataset.daily {
        let (first, last) = Window::new(start, end).dates();
        start = utc_midnight(first);
        end = utc_midnight(last);
    }
    if start >= end {
        return Vec::new();
    }
    let Some(span) = dataset.max_span else {
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
pub(crate) fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
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
