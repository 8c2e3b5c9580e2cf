//! Faults on demand: every vendor's data routes pass through [`inject`], which reads the current
//! [`FaultPlan`] of that vendor and may delay, fail, cut or garble the answer.
//!
//! Tests steer a plan at run time through [`Faults::set`]. Draws come from a seeded RNG so a
//! test that sets the same plan on the same sandbox sees the same sequence of faults.
//!
//! For answers no plan describes (a wrong type, a date in another format, gzip garbage), a test
//! scripts them byte for byte with [`Faults::script`]: the vendor's next answers are replaced by
//! the given [`RawAnswer`]s, in order, before any plan is drawn. [`Faults::script_after`] lets a
//! number of real answers pass first, so a fault can land in the middle of a paged load.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to do to a share of requests. Every rate is a probability in `0.0..=1.0`, drawn per call.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Added to every answer.
    pub latency: Duration,
    /// Share answered with 500, 502 or 503 (in turn).
    pub server_error_rate: f64,
    /// Share whose connection is cut mid-body (the client sees a reset / incomplete body).
    pub reset_rate: f64,
    /// Share that hang for [`FaultPlan::hang_for`] before answering (longer than a client timeout).
    pub timeout_rate: f64,
    /// How long a "timeout" request hangs. Defaults to 60 s when zero.
    pub hang_for: Duration,
    /// Share answered 200 with a truncated, unparseable JSON body.
    pub malformed_rate: f64,
    /// Share answered 200 with a GraphQL `errors` array and no data (transient server error).
    pub graphql_error_rate: f64,
    /// Share answered 200 with an HTML error page (as a misbehaving gateway would).
    pub html_rate: f64,
}

/// One answer served verbatim instead of the vendor's own: any status, any headers, any bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer {
    pub status: u16,
    /// Sent as given; a name or value that is not a valid header is left out.
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

impl RawAnswer {
    /// An answer with `status` and `body` and no headers.
    pub fn new(status: u16, body: impl Into<bytes::Bytes>) -> Self {
        RawAnswer {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A 200 with `content-type: application/json` (whether or not `body` is JSON).
    pub fn json(body: impl Into<bytes::Bytes>) -> Self {
        RawAnswer::new(200, body).header("content-type", "application/json")
    }

    /// The same answer with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

/// A vendor's live fault plan plus the RNG that draws from it. Cloned into the middleware.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Mutex<(FaultPlan, ChaCha8Rng, FaultCounts)>>,
    /// Scripted answers still to serve; `None` lets one real answer through. The test thread
    /// writes it through [`Faults::script`], every request of the vendor pops from it; one lock
    /// keeps the order exact when requests race.
    script: Arc<Mutex<VecDeque<Option<RawAnswer>>>>,
}

/// How many faults of each kind were injected so far (tests compare against retries seen).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub server_errors: u64,
    pub resets: u64,
    pub timeouts: u64,
    pub malformed: u64,
    pub graphql_errors: u64,
    pub html: u64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.server_errors + self.resets + self.timeouts + self.malformed + self.graphql_errors + self.html
    }
}

enum Fault {
    ServerError(StatusCode),
    Reset,
    Timeout(Duration),
    Malformed,
    GraphqlError,
    Html,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Faults {
            inner: Arc::new(Mutex::new((
                FaultPlan::default(),
                ChaCha8Rng::seed_from_u64(seed),
                FaultCounts::default(),
            ))),
            script: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// Replaces the vendor's next `answers.len()` answers with `answers`, in order (any earlier
    /// script is dropped). Faults of the plan apply again once the script is used up.
    pub fn script(&self, answers: Vec<RawAnswer>) {
        self.script_after(0, answers);
    }

    /// Like [`Faults::script`], but lets `pass` real answers through first.
    pub fn script_after(&self, pass: usize, answers: Vec<RawAnswer>) {
        let mut script = self.lock_script();
        script.clear();
        script.extend(std::iter::repeat_n(None, pass));
        script.extend(answers.into_iter().map(Some));
    }

    /// Scripted answers (and passes) not served yet.
    pub fn scripted_remaining(&self) -> usize {
        self.lock_script().len()
    }

    fn lock_script(&self) -> std::sync::MutexGuard<'_, VecDeque<Option<RawAnswer>>> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the plan; takes effect from the next request.
    pub fn set(&self, plan: FaultPlan) {
        self.lock().0 = plan;
    }

    /// Clears every fault, the script included.
    pub fn clear(&self) {
        self.set(FaultPlan::default());
        self.lock_script().clear();
    }

    pub fn counts(&self) -> FaultCounts {
        self.lock().2.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (FaultPlan, ChaCha8Rng, FaultCounts)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn draw(&self) -> (Duration, Option<Fault>) {
        let mut guard = self.lock();
        let (plan, rng, counts) = &mut *guard;
        let latency = plan.latency;
        let mut roll = |rate: f64| rate > 0.0 && rng.random::<f64>() < rate;
        let fault = if roll(plan.server_error_rate) {
            counts.server_errors += 1;
            let status = match counts.server_errors % 3 {
                0 => StatusCode::INTERNAL_SERVER_ERROR,
                1 => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            Some(Fault::ServerError(status))
        } else if roll(plan.reset_rate) {
            counts.resets += 1;
            Some(Fault::Reset)
        } else if roll(plan.timeout_rate) {
            counts.timeouts += 1;
            let hang = if plan.hang_for.is_zero() {
                Duration::from_secs(60)
            } else {
                plan.hang_for
            };
            Some(Fault::Timeout(hang))
        } else if roll(plan.malformed_rate) {
            counts.malformed += 1;
            Some(Fault::Malformed)
        } else if roll(plan.graphql_error_rate) {
            counts.graphql_errors += 1;
            Some(Fault::GraphqlError)
        } else if roll(plan.html_rate) {
            counts.html += 1;
            Some(Fault::Html)
        } else {
            None
        };
        (latency, fault)
    }
}

/// Axum middleware: `axum::middleware::from_fn_with_state(faults.clone(), faults::inject)`.
pub async fn inject(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let scripted = faults.lock_script().pop_front();
    match scripted {
        Some(Some(answer)) => return answer.into_response(),
        Some(None) => return next.run(request).await,
        None => {}
    }
    let (latency, fault) = faults.draw();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        None => next.run(request).await,
        Some(Fault::ServerError(status)) => (status, format!("{status}")).into_response(),
        Some(Fault::Timeout(hang)) => {
            tokio::time::sleep(hang).await;
            next.run(request).await
        }
        Some(Fault::Malformed) => json_response(r#"{"data": {"content": [{"id": "1", "#),
        Some(Fault::GraphqlError) => json_response(
            r#"{"data":null,"errors":[{"message":"Internal server error","extensions":{"classification":"INTERNAL_ERROR"}}]}"#,
        ),
        Some(Fault::Html) => {
            let mut response = Response::new(Body::from(
                "<html><head><title>502 Bad Gateway</title></head><body>upstream hiccup</body></html>",
            ));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            response
        }
        Some(Fault::Reset) => {
            // Announce a long body, send a little of it, then fail the stream: hyper aborts the
            // connection and the client sees an incomplete message, as with a reset.
            let stream = cut_off_body(bytes::Bytes::from_static(b"{\"data\": {\"con"));
            let mut response = Response::new(Body::from_stream(stream));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("100000"));
            response
        }
    }
}

fn json_response(body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A body that yields `first` and then fails, which makes hyper abort the connection.
fn cut_off_body(
    first: bytes::Bytes,
) -> impl futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    struct TwoStep(u8, Option<bytes::Bytes>);
    impl futures_core::Stream for TwoStep {
        type Item = Result<bytes::Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.0 += 1;
            match self.0 {
                1 => std::task::Poll::Ready(self.1.take().map(Ok)),
                2 => std::task::Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "sandbox: injected connection reset",
                )))),
                _ => std::task::Poll::Ready(None),
            }
        }
    }
    TwoStep(0, Some(first))
}
