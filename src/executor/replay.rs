//! A rebuild's calls: nothing is sent; the window's next archived answer is decoded by the same
//! code that decodes a live one (see [`crate::archive::replay`]). No credential, no rate-limit
//! slot, no retry: an archived answer is what it is, and one the decoder refuses fails the call
//! with the kind a live answer would (a schema mismatch when the query's text changed since).

use super::classify::Verdict;
use super::{CallContext, CallError, call::fatal};
use crate::archive::{QueryId, Replay};

/// Decodes the next archived answer of `replay` for a call asking `query`.
pub(super) async fn replayed<T>(
    call: &CallContext,
    replay: &Replay,
    query: &QueryId,
    decode: impl Fn(&[u8]) -> Result<T, Verdict>,
) -> Result<T, CallError> {
    let archived = replay
        .next(query)
        .await
        .map_err(|e| fatal(call, e.kind, e.message))?;
    let decoding = std::time::Instant::now();
    let decoded = decode(&archived.body);
    crate::stages::Stage::Decode.since(decoding);
    decoded.map_err(|verdict| {
        let kind = verdict.kind();
        let cause = match verdict {
            Verdict::Retry { cause, .. }
            | Verdict::RefreshAndRetryOnce { cause }
            | Verdict::Fatal { cause, .. }
            | Verdict::QuotaExhausted { cause }
            | Verdict::ScopeRefused { cause } => cause,
        };
        let error = replay.unreadable(&archived, query, kind, &cause);
        fatal(call, error.kind, error.message)
    })
}
