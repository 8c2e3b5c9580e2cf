//! Checks that a load's pages are not lying: [`SeenInLoad`].

use super::rows::TableRow;
use crate::failure::Failure;

/// Notices an upstream whose pages lie: a non-empty page made only of records this load already
/// read (pages cycling A, B, A, B… or A, B, C, A…; a page repeated at once), a cursor or page
/// number it already answered, and at the end a row count that disagrees with the total the
/// vendor announced. Comparing with the previous page only let a cycle of period 2 run its course
/// as a "successful" load that kept 10 rows of 9,300. A page that merely overlaps earlier ones
/// (offset paging drift) is fine: the writer replaces those records.
///
/// Memory is bounded, not proportional to the window: the record hashes it keeps stop at
/// [`REMEMBERED_RECORDS`] (2 MiB). Beyond that, every page is still compared with every earlier
/// page as a whole (a fingerprint of its distinct keys, 16 bytes a page), so a cycle of any period
/// is still refused; what is no longer noticed is a page made of records scattered over several
/// earlier pages past the first [`REMEMBERED_RECORDS`], and the announced total is no longer
/// checked (it says so in the load's warnings).
#[derive(Debug)]
pub struct SeenInLoad {
    /// A hash of the natural key of every record read in this load, sorted and distinct, up to
    /// `limit`: 8 bytes a record, where a hash set took more than twice that.
    records: Vec<u64>,
    limit: usize,
    /// More distinct records were read than `records` could hold.
    overflowed: bool,
    /// Per page read: its distinct records and a hash of their sorted hashes.
    pages: std::collections::HashSet<(usize, u64)>,
    /// Every cursor or page position the upstream answered with.
    positions: std::collections::HashSet<String>,
}

/// How many distinct records [`SeenInLoad`] remembers one by one (8 bytes each).
pub const REMEMBERED_RECORDS: usize = 1 << 18;

impl Default for SeenInLoad {
    fn default() -> Self {
        SeenInLoad::remembering(REMEMBERED_RECORDS)
    }
}

impl SeenInLoad {
    /// A check that remembers at most `limit` records one by one.
    pub fn remembering(limit: usize) -> SeenInLoad {
        SeenInLoad {
            records: Vec::new(),
            limit,
            overflowed: false,
            pages: Default::default(),
            positions: Default::default(),
        }
    }

    /// Refuses `rows` (every record of the page, skipped ones included) when all of them were
    /// read before in this load; remembers them otherwise.
    pub fn check_records<'a, R: TableRow + 'a>(
        &mut self,
        rows: impl IntoIterator<Item = &'a R>,
    ) -> anyhow::Result<()> {
        // One buffer for every key's text, rather than a string per key and record.
        let mut scratch = String::new();
        let keys = rows.into_iter().map(|row| row.key_hash(&mut scratch)).collect();
        self.check_keys(keys)
    }

    /// [`SeenInLoad::check_records`] for key hashes already taken ([`TableRow::key_hash`]).
    pub fn check_keys(&mut self, mut keys: Vec<u64>) -> anyhow::Result<()> {
        let read = keys.len();
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() && keys.iter().all(|k| self.records.binary_search(k).is_ok()) {
            return Err(Failure::invalid_answer(format!(
                "the page holds only records an earlier page of this load already had ({read} of them); \
                 the upstream is cycling through its pages, so the load stopped and nothing of it is kept"
            ))
            .into());
        }
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            keys.hash(&mut hasher);
            (keys.len(), hasher.finish())
        };
        if !keys.is_empty() && !self.pages.insert(fingerprint) {
            return Err(Failure::invalid_answer(format!(
                "the page repeats an earlier page of this load ({read} records); the upstream is cycling \
                 through its pages, so the load stopped and nothing of it is kept"
            ))
            .into());
        }
        if self.overflowed {
            return Ok(());
        }
        // Merged in place from the back: no second buffer the size of the load.
        let (mut old, mut new) = (self.records.len(), keys.len());
        if old + new > self.limit {
            // Exactly the limit, never a doubling past it; from here on only whole pages are
            // compared.
            self.records.reserve_exact(self.limit.saturating_sub(old));
            self.overflowed = true;
            return Ok(());
        }
        self.records.extend_from_slice(&keys);
        for at in (0..self.records.len()).rev() {
            if new == 0 {
                break;
            }
            if old > 0 && self.records[old - 1] > keys[new - 1] {
                self.records[at] = self.records[old - 1];
                old -= 1;
            } else {
                self.records[at] = keys[new - 1];
                new -= 1;
            }
        }
        self.records.dedup();
        Ok(())
    }

    /// Refuses a cursor or page position (`what` names it in the error) seen before in this load.
    pub fn check_position(&mut self, what: &str, position: &str) -> anyhow::Result<()> {
        if !self.positions.insert(format!("{what}\u{1f}{position}")) {
            return Err(Failure::invalid_answer(format!(
                "the upstream answered with {what} `{position}` a second time in this load; \
                 its paging runs in a circle, so the load stopped and nothing of it is kept"
            ))
            .into());
        }
        Ok(())
    }

    /// Refuses a load whose distinct records disagree with the total the vendor announced.
    /// Past [`REMEMBERED_RECORDS`] distinct records the count is not known: `Ok` with a warning
    /// saying the total went unchecked.
    pub fn check_total(&self, announced: Option<i64>) -> anyhow::Result<Option<String>> {
        if self.overflowed {
            return Ok(announced.map(|total| {
                format!(
                    "the announced total of {total} record(s) was not checked: the load read more than {} distinct records",
                    self.limit
                )
            }));
        }
        let read = i64::try_from(self.records.len()).unwrap_or(i64::MAX);
        match announced {
            Some(total) if total != read => Err(Failure::invalid_answer(format!(
                "the upstream announced {total} record(s) but its pages held {read} distinct one(s); \
                 the load is not kept"
            ))
            .into()),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::rows::table_row;

    table_row! {
        struct Record in "test.records" {
            key: [id],
            columns: {
                id: String,
                value: &'static str,
            }
        }
    }

    fn page(ids: &[&str]) -> Vec<Record> {
        ids.iter()
            .map(|id| Record {
                id: (*id).to_owned(),
                value: "v",
            })
            .collect()
    }

    #[test]
    fn pages_cycling_with_period_two_or_three_are_refused_and_drift_is_not() {
        for period in [2usize, 3] {
            let pages = [page(&["a1", "a2"]), page(&["b1", "b2"]), page(&["c1", "c2"])];
            let mut seen = SeenInLoad::default();
            for (n, rows) in pages.iter().cycle().take(period).enumerate() {
                seen.check_records(rows.iter())
                    .unwrap_or_else(|e| panic!("page {n} is new: {e}"));
            }
            let again = seen.check_records(pages[0].iter());
            assert!(
                again.is_err_and(|e| e.to_string().contains("cycling")),
                "period {period}"
            );
        }
        // Offset drift: a page that overlaps an earlier one but brings new records is fine.
        let mut seen = SeenInLoad::default();
        seen.check_records(page(&["a1", "a2"]).iter()).expect("new");
        seen.check_records(page(&["a2", "a3"]).iter())
            .expect("overlap with new");
    }

    #[test]
    fn records_read_on_several_pages_count_once_and_stay_known_in_any_order() {
        let mut seen = SeenInLoad::default();
        seen.check_records(page(&["m", "c", "x"]).iter()).expect("new");
        seen.check_records(page(&["a", "x", "z", "a"]).iter())
            .expect("overlap with new");
        assert_eq!(seen.check_total(Some(5)).expect("five distinct records"), None);
        for old in [["a", "z"], ["c", "m"], ["x", "a"]] {
            assert!(seen.check_records(page(&old).iter()).is_err(), "{old:?}");
        }
    }

    #[test]
    fn a_cursor_seen_before_and_a_total_that_disagrees_are_refused() {
        let mut seen = SeenInLoad::default();
        seen.check_position("cursor", "A").expect("new");
        seen.check_position("cursor", "B").expect("new");
        assert!(seen.check_position("cursor", "A").is_err());
        seen.check_records(page(&["a1", "a2"]).iter()).expect("new");
        assert_eq!(seen.check_total(Some(2)).expect("agrees"), None);
        seen.check_total(None).expect("nothing announced");
        let error = seen.check_total(Some(9300)).expect_err("disagrees");
        assert!(error.to_string().contains("announced 9300"), "{error}");
    }

    #[test]
    fn past_its_limit_it_still_refuses_a_repeated_page_and_says_the_total_went_unchecked() {
        let mut seen = SeenInLoad::remembering(4);
        let pages = [page(&["a1", "a2"]), page(&["b1", "b2"]), page(&["c1", "c2"])];
        for rows in &pages {
            seen.check_records(rows.iter()).expect("new");
        }
        assert!(seen.records.len() <= 4, "never more than its limit");
        // c1, c2 were read past the limit: not remembered one by one, but as a page.
        let again = seen.check_records(pages[2].iter());
        assert!(again.is_err_and(|e| e.to_string().contains("repeats an earlier page")));
        // A new mix of remembered records is still refused record by record.
        assert!(seen.check_records(page(&["a1", "b2"]).iter()).is_err());
        let unchecked = seen
            .check_total(Some(6))
            .expect("not refused")
            .expect("a warning");
        assert!(unchecked.contains("not checked"), "{unchecked}");
    }
}
