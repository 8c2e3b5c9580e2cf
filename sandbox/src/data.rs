//! The deterministic record generator every vendor module builds on.
//!
//! A record is a pure function of `(seed, what, key parts)`: [`rng_for`] hashes those into a
//! ChaCha seed, so two sandboxes with the same [`crate::SandboxOptions`] serve identical data and a
//! test can recompute what any window must contain. [`Edits`] overlays changes and deletions on
//! top of the generated data to test re-extraction.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A seeded RNG for one generated thing, e.g. `rng_for(seed, &["retarus", "fax_in", "99999", "2026-11-01"])`.
/// Uses a fixed FNV-1a hash (not `DefaultHasher`, whose output may change between Rust releases).
pub fn rng_for(seed: u64, parts: &[&str]) -> ChaCha8Rng {
    let mut hasher = Fnv1a(0xcbf2_9ce4_8422_2325 ^ seed);
    for part in parts {
        part.hash(&mut hasher);
    }
    ChaCha8Rng::seed_from_u64(hasher.finish())
}

struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The UTC days of generated history, oldest first: `history_days` days ending with the anchor's day.
pub fn history_days(anchor: DateTime<Utc>, history_days: u32) -> impl Iterator<Item = NaiveDate> {
    let last = anchor.date_naive();
    (0..history_days)
        .rev()
        .map(move |back| last - Duration::days(i64::from(back)))
}

/// Changes and deletions applied on top of generated data, keyed by a record's natural id.
/// Shared between a vendor's handle (tests write) and its resolvers (read on every call).
#[derive(Clone, Default)]
pub struct Edits {
    inner: Arc<RwLock<EditSet>>,
}

#[derive(Default)]
struct EditSet {
    deleted: HashSet<String>,
    /// id → (field name → new JSON value)
    changed: HashMap<String, HashMap<String, serde_json::Value>>,
}

impl Edits {
    /// Removes the record with this id from every later answer.
    pub fn delete(&self, id: impl Into<String>) {
        self.write().deleted.insert(id.into());
    }

    /// Overrides one field of the record with this id in every later answer.
    pub fn change(&self, id: impl Into<String>, field: impl Into<String>, value: serde_json::Value) {
        self.write()
            .changed
            .entry(id.into())
            .or_default()
            .insert(field.into(), value);
    }

    pub fn is_deleted(&self, id: &str) -> bool {
        self.read().deleted.contains(id)
    }

    /// The overridden fields of a record, if any.
    pub fn changes_for(&self, id: &str) -> Option<HashMap<String, serde_json::Value>> {
        self.read().changed.get(id).cloned()
    }

    /// Whether no record is changed or deleted, i.e. answers are exactly the generated data
    /// (what lets a vendor serve a page from its generator without materialising the window).
    pub fn is_empty(&self) -> bool {
        let set = self.read();
        set.deleted.is_empty() && set.changed.is_empty()
    }

    /// Drops every edit.
    pub fn reset(&self) {
        *self.write() = EditSet::default();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, EditSet> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, EditSet> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn the_same_parts_give_the_same_numbers() {
        let a: u64 = rng_for(7, &["x", "y"]).random();
        let b: u64 = rng_for(7, &["x", "y"]).random();
        let c: u64 = rng_for(7, &["x", "z"]).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
