//! The one road to the outside: every request to an upstream — data, token, refresh, code
//! exchange, scope discovery, introspection — is sent by a [`Transport`], so every answer meets
//! the same limits, whichever part of the service asked:
//!
//! - **no redirects**: a redirect could carry a credential to another host; the configured URLs
//!   are final. A 3xx answer is [`TransportError::Redirected`] (`upstream_rejected`), at once;
//! - **timeouts**: connecting, and the whole request from sending to the last byte;
//! - **a body size limit**, counted while the body streams in, after decompression (an announced
//!   oversized length is not read at all; a chunked or gzip-bombed one stops at the limit);
//! - **one classification** of what went wrong on the wire into a [`FailureKind`], and whether
//!   trying again can help.
//!
//! What an answer *means* (its status, its GraphQL errors, an OAuth error) is read by whoever
//! asked — the executor's `classify`, auth's `endpoint` — from the bounded [`Answer`] this
//! returns. The check `only_the_transport_builds_an_http_client` (below) keeps it the one road:
//! no other file in `src/` may build a `reqwest::Client`.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::failure::FailureKind;

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, from sending to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer body read (after decompression). A full Retarus page of 10,000 records is
/// about 20 MB; anything far beyond that is a broken upstream (or a gzip bomb) and would otherwise
/// be held in memory whole.
pub const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// The limits every request and answer of one [`Transport`] is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Bodies longer than this are refused (see [`MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// A complete answer: status, headers and the whole body, within the limits.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why no usable answer came back. Messages never quote a header we sent.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No answer: the connection failed, the request timed out, or the body was cut off.
    /// `headers` are the answer's when it had begun (a body cut off), for the rate limiter.
    #[error("{what}")]
    Unreachable {
        what: &'static str,
        /// What reqwest said (with hyper's and the OS's causes below it).
        #[source]
        cause: reqwest::Error,
        status: Option<StatusCode>,
        headers: Option<HeaderMap>,
    },
    /// A 3xx answer; never followed, so nothing was sent to the other host.
    #[error(
        "HTTP {}: the upstream redirected{}; redirects are not followed (check the configured URL)",
        status.as_u16(),
        target.as_deref().map(|t| format!(" to {t}")).unwrap_or_default()
    )]
    Redirected {
        status: StatusCode,
        /// The host (scheme and authority only) the redirect pointed to, if it named one.
        target: Option<String>,
        headers: HeaderMap,
    },
    /// The body outgrew the limit (or announced that it would); the rest was not read.
    #[error("HTTP {}: the answer is larger than {limit} bytes; it was not read", status.as_u16())]
    TooLarge {
        status: StatusCode,
        limit: usize,
        headers: HeaderMap,
    },
}

impl TransportError {
    /// What a run this error stops fails with.
    pub fn kind(&self) -> FailureKind {
        match self {
            TransportError::Unreachable { .. } => FailureKind::UpstreamUnavailable,
            TransportError::Redirected { .. } => FailureKind::UpstreamRejected,
            TransportError::TooLarge { .. } => FailureKind::InvalidAnswer,
        }
    }

    /// Whether the same request may succeed later. A redirect or an oversized answer would come
    /// back the same.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TransportError::Unreachable { .. })
    }

    /// The answer's status, when one arrived.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            TransportError::Unreachable { status, .. } => *status,
            TransportError::Redirected { status, .. } | TransportError::TooLarge { status, .. } => {
                Some(*status)
            }
        }
    }

    /// The answer's headers, when one arrived (rate-limit headers count even on a refused answer).
    pub fn headers(&self) -> Option<&HeaderMap> {
        match self {
            TransportError::Unreachable { headers, .. } => headers.as_ref(),
            TransportError::Redirected { headers, .. } | TransportError::TooLarge { headers, .. } => {
                Some(headers)
            }
        }
    }
}

/// The HTTP client every upstream request is sent with, and the limits it holds answers to.
/// Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    limits: Limits,
}

impl Transport {
    pub fn new(limits: Limits) -> anyhow::Result<Transport> {
        use anyhow::Context as _;
        let client = reqwest::Client::builder()
            // A redirect could carry the credential to another host; the configured URLs are final.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.request_timeout)
            .gzip(true)
            .user_agent(concat!("reporting-etl/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the upstream HTTP client")?;
        Ok(Transport { client, limits })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A request to `url`, to be completed (headers, body) and passed to [`Transport::send`].
    pub fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `request` and reads its answer whole, within the limits.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, TransportError> {
        let response = request.send().await.map_err(|e| unreachable(e, None, None))?;
        let status = response.status();
        if status.is_redirection() {
            let target = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| url::Url::parse(location).ok())
                .map(|url| url.origin().ascii_serialization());
            return Err(TransportError::Redirected {
                status,
                target,
                headers: response.headers().clone(),
            });
        }
        let headers = response.headers().clone();
        match read_body(response, self.limits.max_body_bytes).await {
            Ok(Some(body)) => Ok(Answer {
                status,
                headers,
                body,
            }),
            Ok(None) => Err(TransportError::TooLarge {
                status,
                limit: self.limits.max_body_bytes,
                headers,
            }),
            Err(e) => Err(unreachable(e, Some(status), Some(headers))),
        }
    }
}

/// Reads the answer's body chunk by chunk, stopping as soon as it exceeds `max` bytes (the
/// announced length is checked first, so an honest oversized answer is not read at all).
/// `None`: too large.
async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Option<Bytes>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    // Sized from the announced length: growing by doubling held up to twice a page's size.
    let announced = response.content_length().map_or(0, |n| n as usize);
    let mut body = bytes::BytesMut::with_capacity(announced.min(max));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

fn unreachable(
    error: reqwest::Error,
    status: Option<StatusCode>,
    headers: Option<HeaderMap>,
) -> TransportError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer was cut off"
    } else {
        "the request failed"
    };
    TransportError::Unreachable {
        what,
        cause: error,
        status,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file below `src/` that builds an HTTP client, other than this one.
    fn files_building_clients(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("readable source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                files_building_clients(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("transport.rs")
                && !path.ends_with("cli/demo.rs")
            {
                let text = std::fs::read_to_string(&path).expect("readable source file");
                if text.contains("Client::builder") || text.contains("Client::new") {
                    out.push(path.display().to_string());
                }
            }
        }
    }

    /// One road out: no other module may send upstream requests with a client of its own (and its
    /// own limits). `cli/demo.rs` is the exception: it plays the *browser* of a person authorising
    /// the sandbox, not an upstream call of ours.
    #[test]
    fn only_the_transport_builds_an_http_client() {
        let mut found = Vec::new();
        files_building_clients(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        assert!(
            found.is_empty(),
            "these files build their own HTTP client instead of using transport::Transport: {found:?}"
        );
    }
}
