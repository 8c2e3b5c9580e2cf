//! Per-stage timers of the data path (fetch, decode, map, encode, COPY, swap), process-wide:
//! cheap enough to stay on (one clock read per page and stage), read by the load-throughput
//! benchmark to show where a load's time goes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stage of loading a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the upstream's answer and reading its body (rate-limit waits included).
    Fetch,
    /// Decoding the answer's JSON into the query's types.
    Decode,
    /// Mapping decoded records to rows.
    Map,
    /// Encoding rows as COPY text.
    Encode,
    /// COPY of pages into the staging table (in the background, alongside the next page).
    Copy,
    /// The loader waiting for the previous page's COPY before sending the next.
    CopyWait,
    /// The swap: deleting the window's old rows and inserting the staged ones.
    Swap,
    /// Waiting for an answer's compression for the archive after its decoding (the compression
    /// runs on the blocking pool beside the decoding).
    Compress,
    /// Staging answers for the archive (in the background, with the page's COPY).
    Archive,
    /// Writing the staged answers into the archive in the window's transaction (after the swap).
    ArchiveSwap,
}

/// Every stage, in the order of the data path.
pub const ALL: [Stage; 10] = [
    Stage::Fetch,
    Stage::Decode,
    Stage::Map,
    Stage::Encode,
    Stage::Copy,
    Stage::CopyWait,
    Stage::Swap,
    Stage::Compress,
    Stage::Archive,
    Stage::ArchiveSwap,
];

static NANOS: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::Decode => "decode",
            Stage::Map => "map",
            Stage::Encode => "encode",
            Stage::Copy => "copy",
            Stage::CopyWait => "copy_wait",
            Stage::Swap => "swap",
            Stage::Compress => "compress",
            Stage::Archive => "archive",
            Stage::ArchiveSwap => "archive_swap",
        }
    }

    /// Adds `elapsed` to this stage.
    pub fn add(self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        NANOS[self as usize].fetch_add(nanos, Ordering::Relaxed);
    }

    /// Takes `elapsed` out of this stage: time a nested stage spent inside it (mapping inside a
    /// decode that maps records as it reads them), added to that stage instead.
    pub fn exclude(self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // Wrapping, like every atomic add: the decode adds its whole time right after.
        NANOS[self as usize].fetch_sub(nanos, Ordering::Relaxed);
    }

    /// Adds the time since `started` to this stage.
    pub fn since(self, started: Instant) {
        self.add(started.elapsed());
    }

    /// Time spent in this stage since the process started (or the last [`reset`]).
    pub fn total(self) -> Duration {
        Duration::from_nanos(NANOS[self as usize].load(Ordering::Relaxed))
    }
}

/// Sets every stage's time back to zero.
pub fn reset() {
    for stage in &NANOS {
        stage.store(0, Ordering::Relaxed);
    }
}
