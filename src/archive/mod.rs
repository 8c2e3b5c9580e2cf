//! The raw archive: every answer a window's load used, kept compressed in PostgreSQL (schema
//! `archive`, migration 0011) and committed with the window's swap, so that a mapping can be
//! re-derived later (`reporting-etl rebuild`) without asking the vendor again.
//!
//! How an answer travels: the executor hands every answer it decoded for a call whose context
//! carries a [`Recorder`] to it ([`Recorder::record`]: the bytes as received, after transport
//! decoding, with the query's name and the hash of its text), which starts compressing it at once
//! on the blocking pool, while the load waits for its next answer. The load's sink takes the
//! recorded answers each time it stages a page of rows and stages them on the load's own
//! connection, into a session-temporary table ([`stage`]); the window's swap then moves them into
//! `archive.pages` and writes their `archive.windows` row in the window's one transaction. So a
//! committed window always has its answers, a failed, rolled-back or killed one leaves none (its
//! staging table ends with its session), the swap stays short, and at most the answers of a page
//! or two wait in memory, compressed. The hook is in the executor and the sink, which every vendor goes
//! through: no vendor knows the archive.
//!
//! A rebuild gives a window's calls a [`Replay`] instead: the executor then sends nothing and
//! feeds the archived answers, in the order the load used them, to the same decoding and
//! mapping code a load runs ([`replay`]).
//!
//! # Layout
//!
//! - This file: [`QueryId`], [`Answer`], the [`Recorder`].
//! - [`stage`]: compressing and staging answers on the load's connection, and the swap's writes.
//! - [`replay`]: the archived answers of one window, served back to a rebuild.
//! - [`store`]: what the archive holds: windows for a rebuild, sizes per dataset, retention.

pub mod replay;
pub mod stage;
pub mod store;

use std::sync::Mutex;

use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use replay::Replay;

/// Which question an answer was given to: a GraphQL operation's name and the SHA-256 of its
/// document, or a REST method and path and the SHA-256 of that text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryId {
    pub name: String,
    pub sha256: [u8; 32],
}

impl QueryId {
    /// A GraphQL operation (`Q::OPERATION_NAME`, `Q::QUERY`).
    pub fn graphql(operation: &str, document: &str) -> QueryId {
        QueryId {
            name: operation.to_owned(),
            sha256: Sha256::digest(document.as_bytes()).into(),
        }
    }

    /// A REST resource: what identifies its question is the method and path (the query string
    /// carries the window and paging, which the load computes again in a rebuild).
    pub fn rest(method: &str, path: &str) -> QueryId {
        let text = format!("{method} {path}");
        QueryId {
            sha256: Sha256::digest(text.as_bytes()).into(),
            name: text,
        }
    }

    /// The hash's first bytes in hex, for messages.
    pub fn short_hash(&self) -> String {
        short_hex(&self.sha256)
    }
}

/// The first eight bytes of a hash in hex.
pub(crate) fn short_hex(hash: &[u8]) -> String {
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// One answer a load used, being compressed.
#[derive(Debug)]
pub struct Answer {
    /// Order in which the load used it, from 1.
    pub page: i32,
    pub query: QueryId,
    /// Its length as received (after transport decoding).
    pub raw_bytes: usize,
    stored: Stored,
}

/// An answer's compression: started the moment it is recorded, on the blocking pool, so that it
/// runs while the load waits for its next answer, and the answer as received is dropped as soon
/// as it is compressed (a page of records can be tens of MiB; its frame a tenth of that).
#[derive(Debug)]
enum Stored {
    Compressing(tokio::task::JoinHandle<std::io::Result<Vec<u8>>>),
    Done(std::io::Result<Vec<u8>>),
}

impl Answer {
    /// The answer as stored: one zstd frame.
    pub async fn stored(self) -> std::io::Result<Vec<u8>> {
        match self.stored {
            Stored::Done(stored) => stored,
            Stored::Compressing(task) => task.await.map_err(std::io::Error::other)?,
        }
    }
}

/// Collects the answers of one window's load between the executor, which records them as it
/// decodes them, and the load's sink, which takes them whenever it stages a page and at its swap.
/// Shared by the window's calls and its sink: locked only to push or to take the list.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    /// Answers recorded and not yet taken by the sink.
    pending: Vec<Answer>,
    /// Answers recorded so far (the next one's page is this plus one).
    count: i32,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Records an answer the load used (the executor calls this once per decoded answer) and
    /// starts compressing it.
    pub fn record(&self, query: &QueryId, body: Bytes) {
        let raw_bytes = body.len();
        let stored = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Stored::Compressing(runtime.spawn_blocking(move || compress(&body))),
            Err(_) => Stored::Done(compress(&body)),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.count += 1;
        let page = inner.count;
        inner.pending.push(Answer {
            page,
            query: query.clone(),
            raw_bytes,
            stored,
        });
    }

    /// The answers recorded since the last call, in order.
    pub fn take(&self) -> Vec<Answer> {
        std::mem::take(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()).pending)
    }
}

/// Compresses an answer for storage: one zstd frame. Level 1: on a page of 10,000 fax records
/// (12.3 MB) it stores 1.19 MB, less than level 3 (1.28 MB) at about three times its speed;
/// level 6 saves another 10 % at an eighth of the speed, and the load must stay fast
/// (`benches/load_throughput.rs`; figures in `docs/archive.md`).
pub fn compress(body: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(body, LEVEL)
}

/// The zstd level answers are stored at (see [`compress`]).
pub const LEVEL: i32 = 1;

/// Decompresses a stored answer whose length as received was `raw_bytes`.
pub fn decompress(stored: &[u8], raw_bytes: usize) -> std::io::Result<Vec<u8>> {
    zstd::bulk::decompress(stored, raw_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_numbered_in_the_order_they_were_recorded_and_taken_once() {
        let recorder = Recorder::new();
        let query = QueryId::graphql("Q", "query Q { a }");
        recorder.record(&query, Bytes::from_static(b"one"));
        recorder.record(&query, Bytes::from_static(b"two"));
        let first = recorder.take();
        assert_eq!(first.iter().map(|a| a.page).collect::<Vec<_>>(), [1, 2]);
        assert!(recorder.take().is_empty());
        recorder.record(&query, Bytes::from_static(b"three"));
        assert_eq!(recorder.take()[0].page, 3);
    }

    #[test]
    fn a_compressed_answer_comes_back_byte_for_byte() {
        let body = br#"{"data":{"records":[{"id":1},{"id":2},{"id":3}]}}"#.repeat(100);
        let stored = compress(&body).unwrap();
        assert!(
            stored.len() < body.len() / 10,
            "{} of {}",
            stored.len(),
            body.len()
        );
        assert_eq!(decompress(&stored, body.len()).unwrap(), body);
    }

    #[test]
    fn queries_differ_by_their_text_not_only_their_name() {
        let a = QueryId::graphql("Q", "query Q { a }");
        let b = QueryId::graphql("Q", "query Q { a b }");
        assert_eq!(a.name, b.name);
        assert_ne!(a.sha256, b.sha256);
        assert_eq!(
            QueryId::rest("GET", "/api/v2/customers").name,
            "GET /api/v2/customers"
        );
    }
}
