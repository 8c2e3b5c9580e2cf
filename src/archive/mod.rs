//! The raw archive: every answer a window's load used, kept compressed in PostgreSQL (schema
//! `archive`, migration 0012) and committed with the window's swap, so that a mapping can be
//! re-derived later (`reporting-etl rebuild`) without asking the vendor again.
//!
//! How an answer travels: the executor hands every answer it decoded for a call whose context
//! carries a [`Recorder`] to it ([`Recorder::record`]: the bytes as received, after transport
//! decoding, with the query's name and the hash of its text), compressed on the blocking pool
//! while the executor decoded it. The load's sink takes the recorded answers each time it stages
//! a page of rows and spools them into an unlinked temporary file ([`stage`]); the window's swap
//! then COPYs them into `archive.pages` and writes their `archive.windows` row in the window's one
//! transaction. So a committed window always has its answers, a failed, rolled-back or killed one
//! leaves none (its spool goes with the sink, or with the process), the swap stays short, and at
//! most the answers of a page or two wait in memory, compressed. The hook is in the executor and the sink, which every vendor goes
//! through: no vendor knows the archive.
//!
//! A rebuild gives a window's calls a [`Replay`] instead: the executor then sends nothing and
//! feeds the archived answers, in the order the load used them, to the same decoding and
//! mapping code a load runs ([`replay`]).
//!
//! # Layout
//!
//! - This file: [`QueryId`], [`Answer`], the [`Recorder`].
//! - [`stage`]: spooling answers beside the load's rows, and the swap's writes.
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

/// One answer a load used, compressed.
#[derive(Debug)]
pub struct Answer {
    /// Order in which the load used it, from 1.
    pub page: i32,
    pub query: QueryId,
    /// Its length as received (after transport decoding).
    pub raw_bytes: usize,
    /// One zstd frame (or why it could not be made).
    pub stored: std::io::Result<Vec<u8>>,
}

/// An answer's compression, started on the blocking pool before the answer is decoded
/// ([`Recorder::compress`]): it runs beside the decoding, so it adds no time to the load, and the
/// answer as received (a page of records can be tens of MiB) is gone once both are done, as it
/// would be without the archive. Only the frame waits for the sink.
#[derive(Debug)]
pub struct Compressing {
    raw_bytes: usize,
    task: Option<tokio::task::JoinHandle<std::io::Result<Vec<u8>>>>,
    done: Option<std::io::Result<Vec<u8>>>,
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

    /// Starts compressing an answer (on the blocking pool when there is a runtime).
    pub fn compress(body: Bytes) -> Compressing {
        let raw_bytes = body.len();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Compressing {
                raw_bytes,
                task: Some(runtime.spawn_blocking(move || compress(&body))),
                done: None,
            },
            Err(_) => Compressing {
                raw_bytes,
                task: None,
                done: Some(compress(&body)),
            },
        }
    }

    /// Records an answer the load used, once its compression is done (the executor calls this
    /// once per decoded answer).
    pub async fn record(&self, query: &QueryId, compressing: Compressing) {
        let stored = match (compressing.task, compressing.done) {
            (Some(task), _) => task.await.map_err(std::io::Error::other).and_then(|r| r),
            (None, Some(done)) => done,
            (None, None) => Err(std::io::Error::other("the answer was not compressed")),
        }
        .map(|mut frame| {
            // The frame was allocated for the worst case (the answer's length).
            frame.shrink_to_fit();
            frame
        });
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.count += 1;
        let page = inner.count;
        inner.pending.push(Answer {
            page,
            query: query.clone(),
            raw_bytes: compressing.raw_bytes,
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

    #[tokio::test]
    async fn answers_are_numbered_in_the_order_they_were_recorded_and_taken_once() {
        let recorder = Recorder::new();
        let query = QueryId::graphql("Q", "query Q { a }");
        for body in [&b"one"[..], b"two"] {
            let compressing = Recorder::compress(Bytes::from_static(body));
            recorder.record(&query, compressing).await;
        }
        let first = recorder.take();
        assert_eq!(first.iter().map(|a| a.page).collect::<Vec<_>>(), [1, 2]);
        let stored = first[1].stored.as_ref().unwrap();
        assert_eq!(decompress(stored, first[1].raw_bytes).unwrap(), b"two");
        assert!(recorder.take().is_empty());
        recorder
            .record(&query, Recorder::compress(Bytes::from_static(b"three")))
            .await;
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
