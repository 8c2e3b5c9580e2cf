//! A hostile upstream: every vendor's whole router (token endpoint and data routes alike) passes
//! through [`mutate`], which lets the vendor answer as usual and then replaces any part of that
//! answer — status, headers, body size, encoding, nesting, slowness, single JSON values (an
//! `expires_in` of 10^13, a record of another customer) — as a test asked through
//! [`Hostile::push`].
//!
//! [`faults`](crate::faults) draws whole canned failures for data routes; this is the knife for
//! everything else, and for token answers, which must meet the same bounds as data answers. A
//! [`Trap`] is the "other host" a hostile redirect points to: a client that followed it would
//! show up in its log, with whatever credential it carried.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// Which answers of a vendor a mutation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The token endpoint (any path ending in `/token`).
    Token,
    /// Every other API route (GraphQL, REST). Browser-facing authorize pages are never touched.
    Data,
}

impl Target {
    fn of(path: &str) -> Option<Target> {
        if path.ends_with("/token") {
            Some(Target::Token)
        } else if path.contains("authorize") || path.ends_with("/auth") {
            None
        } else {
            Some(Target::Data)
        }
    }
}

/// One change to an answer. Several apply in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Replace the status (the body stays).
    Status(u16),
    /// Set a header (`Some`) or remove it (`None`).
    Header { name: String, value: Option<String> },
    /// Replace the body with these bytes.
    Body(bytes::Bytes),
    /// Set the JSON value at `pointer` (RFC 6901, e.g. `/expires_in`,
    /// `/data/smsInUdrReport/content/0/customerId`); a body that is not JSON, or a pointer whose
    /// parent does not exist, is left as it is.
    JsonSet {
        pointer: String,
        value: serde_json::Value,
    },
    /// Replace every occurrence of `from` in the body by `to`.
    Replace { from: String, to: String },
    /// Keep only the first `keep` bytes of the body.
    Truncate { keep: usize },
    /// Wrap the body in `depth` JSON arrays.
    Nest { depth: usize },
    /// Replace the body by `bytes` bytes of JSON-looking filler, streamed in chunks; `announced`
    /// sends its length in `content-length` (an honest oversized answer), otherwise chunked.
    Huge { bytes: u64, announced: bool },
    /// A body that never ends (until the client hangs up).
    Endless,
    /// Answer only after this long.
    Slow(Duration),
    /// Answer `302 Found` pointing at `location` (typically a [`Trap`]), without asking the vendor.
    Redirect { location: String },
}

/// What the hostile layer saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostileCounts {
    pub token_answers: u64,
    pub data_answers: u64,
    /// Answers that had at least one mutation applied.
    pub mutated: u64,
}

/// A vendor's queue of mutations, one entry per answer. Cloned into the middleware.
#[derive(Clone, Default)]
pub struct Hostile {
    inner: Arc<Mutex<State_>>,
}

#[derive(Default)]
struct State_ {
    token: VecDeque<Vec<Mutation>>,
    data: VecDeque<Vec<Mutation>>,
    /// Applied to every answer of the target once its queue is empty.
    always_token: Vec<Mutation>,
    always_data: Vec<Mutation>,
    counts: HostileCounts,
}

impl Hostile {
    /// The next answer of `target` gets `mutations` (queued after earlier pushes).
    pub fn push(&self, target: Target, mutations: Vec<Mutation>) {
        let mut state = self.lock();
        match target {
            Target::Token => state.token.push_back(mutations),
            Target::Data => state.data.push_back(mutations),
        }
    }

    /// Every answer of `target` gets `mutations` while its queue is empty (an empty list stops it).
    pub fn always(&self, target: Target, mutations: Vec<Mutation>) {
        let mut state = self.lock();
        match target {
            Target::Token => state.always_token = mutations,
            Target::Data => state.always_data = mutations,
        }
    }

    /// Drops every queued and standing mutation.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.token.clear();
        state.data.clear();
        state.always_token.clear();
        state.always_data.clear();
    }

    /// Queued mutations not applied yet.
    pub fn pending(&self) -> usize {
        let state = self.lock();
        state.token.len() + state.data.len()
    }

    pub fn counts(&self) -> HostileCounts {
        self.lock().counts.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next(&self, target: Target) -> Vec<Mutation> {
        let mut state = self.lock();
        match target {
            Target::Token => state.counts.token_answers += 1,
            Target::Data => state.counts.data_answers += 1,
        }
        let mutations = match target {
            Target::Token => state
                .token
                .pop_front()
                .unwrap_or_else(|| state.always_token.clone()),
            Target::Data => state
                .data
                .pop_front()
                .unwrap_or_else(|| state.always_data.clone()),
        };
        if !mutations.is_empty() {
            state.counts.mutated += 1;
        }
        mutations
    }
}

/// The largest real answer the layer reads to mutate it.
const MAX_ORIGINAL: usize = 256 * 1024 * 1024;

/// Axum middleware over a vendor's whole router:
/// `router.layer(axum::middleware::from_fn_with_state(hostile.clone(), hostile::mutate))`.
pub async fn mutate(State(hostile): State<Hostile>, request: Request, next: Next) -> Response {
    let Some(target) = Target::of(request.uri().path()) else {
        return next.run(request).await;
    };
    let mutations = hostile.next(target);
    if mutations.is_empty() {
        return next.run(request).await;
    }
    // A redirect comes from in front of the vendor (a gateway, a moved host): the vendor never
    // sees the request, so a single-use refresh token it carried is not used up.
    let response = if mutations.iter().any(|m| matches!(m, Mutation::Redirect { .. })) {
        Response::new(Body::empty())
    } else {
        next.run(request).await
    };
    let (mut parts, body) = response.into_parts();
    let mut body = axum::body::to_bytes(body, MAX_ORIGINAL).await.unwrap_or_default();
    let mut stream: Option<(u64, bool)> = None;
    for mutation in mutations {
        match mutation {
            Mutation::Status(status) => {
                parts.status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            }
            Mutation::Header { name, value } => {
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                    continue;
                };
                match value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    Some(value) => {
                        parts.headers.insert(name, value);
                    }
                    None => {
                        parts.headers.remove(name);
                    }
                }
            }
            Mutation::Body(bytes) => body = bytes,
            Mutation::JsonSet { pointer, value } => {
                if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body)
                    && set_pointer(&mut json, &pointer, value)
                    && let Ok(text) = serde_json::to_vec(&json)
                {
                    body = text.into();
                }
            }
            Mutation::Replace { from, to } => {
                let text = String::from_utf8_lossy(&body).replace(&from, &to);
                body = text.into_bytes().into();
            }
            Mutation::Truncate { keep } => body = body.slice(..keep.min(body.len())),
            Mutation::Nest { depth } => {
                let mut nested = Vec::with_capacity(body.len() + 2 * depth);
                nested.extend(std::iter::repeat_n(b'[', depth));
                nested.extend_from_slice(&body);
                nested.extend(std::iter::repeat_n(b']', depth));
                body = nested.into();
            }
            Mutation::Huge { bytes, announced } => stream = Some((bytes, announced)),
            Mutation::Endless => stream = Some((u64::MAX, false)),
            Mutation::Slow(delay) => tokio::time::sleep(delay).await,
            Mutation::Redirect { location } => {
                parts.status = StatusCode::FOUND;
                if let Ok(value) = HeaderValue::from_str(&location) {
                    parts.headers.insert(header::LOCATION, value);
                }
                body = bytes::Bytes::new();
            }
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    match stream {
        Some((bytes, announced)) => {
            if announced && let Ok(value) = HeaderValue::from_str(&bytes.to_string()) {
                parts.headers.insert(header::CONTENT_LENGTH, value);
            }
            Response::from_parts(
                parts,
                Body::from_stream(Filler {
                    left: bytes,
                    started: false,
                }),
            )
        }
        None => Response::from_parts(parts, Body::from(body)),
    }
}

/// Sets `value` at `pointer`: replaces an existing value, or adds a key to an existing object.
fn set_pointer(json: &mut serde_json::Value, pointer: &str, value: serde_json::Value) -> bool {
    if let Some(slot) = json.pointer_mut(pointer) {
        *slot = value;
        return true;
    }
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return false;
    };
    match json.pointer_mut(parent) {
        Some(serde_json::Value::Object(map)) => {
            map.insert(key.replace("~1", "/").replace("~0", "~"), value);
            true
        }
        _ => false,
    }
}

/// `left` bytes of filler (`{"data":` then spaces), 64 KiB at a time.
struct Filler {
    left: u64,
    started: bool,
}

impl futures_core::Stream for Filler {
    type Item = Result<bytes::Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        const CHUNK: usize = 64 * 1024;
        static SPACES: [u8; CHUNK] = [b' '; CHUNK];
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let size = self.left.min(CHUNK as u64) as usize;
        self.left -= size as u64;
        let chunk = if self.started {
            bytes::Bytes::from_static(&SPACES[..size])
        } else {
            // Looks like the start of a JSON answer to anything that peeks.
            self.started = true;
            let mut start = b"{\"data\":".to_vec();
            start.truncate(size);
            start.extend_from_slice(&SPACES[..size - start.len()]);
            start.into()
        };
        std::task::Poll::Ready(Some(Ok(chunk)))
    }
}

/// One request a [`Trap`] received: its path and query, and its headers.
pub type TrappedRequest = (String, Vec<(String, String)>);

/// A host nobody should ever reach: the target of hostile redirects. Records every request it
/// gets (path and headers), so a test can prove no credential was carried to it.
pub struct Trap {
    pub url: String,
    seen: Arc<Mutex<Vec<TrappedRequest>>>,
    _guard: crate::ServerGuard,
}

impl Trap {
    pub async fn start() -> std::io::Result<Trap> {
        let seen: Arc<Mutex<Vec<TrappedRequest>>> = Arc::default();
        let record = seen.clone();
        let router = axum::Router::new().fallback(move |request: Request| {
            let record = record.clone();
            async move {
                let headers = request
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((request.uri().to_string(), headers));
                (StatusCode::OK, "{}")
            }
        });
        let guard = crate::serve(router).await?;
        Ok(Trap {
            url: format!("http://{}/stolen", guard.addr),
            seen,
            _guard: guard,
        })
    }

    /// Every request the trap received: path and headers.
    pub fn requests(&self) -> Vec<TrappedRequest> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pointer_replaces_a_value_or_adds_a_key_to_an_object() {
        let mut json =
            serde_json::json!({"access_token": "a", "expires_in": 300, "data": {"r": [{"id": 1}]}});
        assert!(set_pointer(&mut json, "/expires_in", serde_json::json!(1e13)));
        assert!(set_pointer(
            &mut json,
            "/data/r/0/customerId",
            serde_json::json!("88888")
        ));
        assert!(!set_pointer(&mut json, "/nothing/here", serde_json::json!(1)));
        assert_eq!(json["expires_in"], serde_json::json!(1e13));
        assert_eq!(json["data"]["r"][0]["customerId"], "88888");
    }

    #[test]
    fn token_data_and_browser_routes_are_told_apart() {
        assert_eq!(Target::of("/oauth/token"), Some(Target::Token));
        assert_eq!(Target::of("/oauth2/token"), Some(Target::Token));
        assert_eq!(Target::of("/graphql"), Some(Target::Data));
        assert_eq!(Target::of("/api/v2/customers"), Some(Target::Data));
        assert_eq!(Target::of("/oauth2/auth"), None);
        assert_eq!(Target::of("/api/oauth/authorize"), None);
    }
}
