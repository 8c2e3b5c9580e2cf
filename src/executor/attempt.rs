//! The attempt loop shared by GraphQL and REST calls: credential, rate-limit slot, send,
//! classify, then return, wait and retry, refresh once, or fail; with the request it builds,
//! the backoff between attempts and the daily-quota stop.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::call::{CallFailure, deadline, fatal};
use super::classify::Verdict;
use super::headers::RateHeaders;
use super::limiter::MIN_WAIT;
use super::secrets::Secrets;
use super::{
    CallContext, CallError, Executor, ScopeHeader, Source, WAIT_CAP_GRACE, classify, instruments, limiter,
};
use crate::archive::QueryId;
use crate::auth::{Credential, SourceAuth};
use crate::failure::FailureKind;
use crate::transport::TransportError;

/// What one attempt sends; the body is built once and reused by every attempt.
pub(super) struct Outgoing<'a> {
    pub(super) method: reqwest::Method,
    pub(super) url: url::Url,
    pub(super) query: &'a [(&'a str, String)],
    pub(super) body: Option<Bytes>,
    pub(super) scope: &'a ScopeHeader,
    /// The question, as the archive names it (see [`crate::archive::QueryId`]).
    pub(super) archived_as: QueryId,
}

impl Executor {
    /// The attempt loop shared by GraphQL and REST: credential, slot, send, classify, and either
    /// return, wait and retry, refresh once, or fail.
    pub(super) async fn run<T>(
        &self,
        call: &CallContext,
        source: &Source,
        outgoing: Outgoing<'_>,
        decode: impl Fn(&[u8]) -> Result<T, Verdict>,
    ) -> Result<T, CallError> {
        // A rebuild: no request, no credential; the archived answer is decoded instead.
        if let Some(replay) = &call.replay {
            return super::replay::replayed(call, replay, &outgoing.archived_as, decode).await;
        }
        let Some(auth) = &source.auth else {
            return Err(fatal(
                call,
                FailureKind::Config,
                "no credentials are configured for this source".into(),
            ));
        };
        let max_attempts = self.options.max_attempts.max(1);
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(until) = quota_spent_until(source) {
                return Err(CallError::new(
                    call,
                    CallFailure::QuotaExhausted {
                        until,
                        message: "not sent: an earlier call was told the quota is spent".into(),
                    },
                ));
            }
            if call.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(deadline(call, "before the call could be sent".into()));
            }

            // One span per attempt: its events (and the limiter's, the auth's) carry the source
            // and attempt; job, dataset, scope and window come from the runner's spans around it.
            let span = tracing::info_span!("upstream", source = %call.source, attempt);
            // The credential is chosen inside the attempt, after the rate-limit wait: a token
            // taken before it may have been replaced (and revoked) or have expired by then.
            let repeat = attempt > 1;
            let (verdict, credential) = match self
                .attempt(call, source, auth, &outgoing, &decode, repeat)
                .instrument(span.clone())
                .await
            {
                Ok(value) => return Ok(value),
                Err((Attempt::Verdict(verdict), credential)) => (verdict, credential),
                Err((Attempt::Auth(error), _)) => {
                    return Err(CallError::new(
                        call,
                        CallFailure::NoCredential {
                            error: Box::new(error),
                        },
                    ));
                }
                Err((Attempt::Deadline, _)) => {
                    return Err(deadline(call, "waiting for the rate limit would pass it".into()));
                }
                Err((Attempt::WaitCapped(message), _)) => {
                    source.note_wait_capped(&message);
                    return Err(CallError::new(call, CallFailure::WaitCapped { message }));
                }
            };
            let secrets = Secrets::new(credential.as_ref(), source.setup.api_key.as_ref());

            match verdict {
                Verdict::Fatal { cause, kind } => return Err(fatal(call, kind, secrets.scrub(&cause))),
                Verdict::ScopeRefused { cause } => {
                    return Err(CallError::new(
                        call,
                        CallFailure::ScopeRefused {
                            message: secrets.scrub(&cause),
                        },
                    ));
                }
                Verdict::QuotaExhausted { cause } => {
                    let until = next_utc_midnight(Utc::now());
                    *source.quota_spent_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
                    tracing::error!(parent: &span, until = %until,
                        "The upstream's daily quota is spent; calls to this source fail until it resets.");
                    return Err(CallError::new(
                        call,
                        CallFailure::QuotaExhausted {
                            until,
                            message: secrets.scrub(&cause),
                        },
                    ));
                }
                Verdict::RefreshAndRetryOnce { cause } => {
                    let cause = secrets.scrub(&cause);
                    if attempt >= max_attempts {
                        return Err(CallError::new(
                            call,
                            CallFailure::Unauthorized {
                                message: format!("{cause} (no attempt left to renew the token)"),
                                kind: FailureKind::Unauthorised,
                            },
                        ));
                    }
                    // Refused a token another job has since replaced: the refusal says nothing
                    // about the current token, so it is retried without spending the one renewal.
                    if let Some(sent) = &credential
                        && auth.replaced_since(sent).await
                    {
                        tracing::info!(parent: &span, cause = %cause,
                            "Upstream refused a token that has since been replaced; retrying with the current one.");
                        instruments::retry(&call.figures, &call.source);
                        continue;
                    }
                    if refreshed {
                        return Err(CallError::new(
                            call,
                            CallFailure::Unauthorized {
                                message: format!("{cause} (also after renewing the token)"),
                                kind: FailureKind::Unauthorised,
                            },
                        ));
                    }
                    refreshed = true;
                    if let Some(credential) = &credential
                        && let Err(error) = auth.rejected(credential).await
                    {
                        return Err(CallError::new(
                            call,
                            CallFailure::RenewalFailed {
                                message: cause,
                                error: Box::new(error),
                            },
                        ));
                    }
                    tracing::info!(parent: &span, cause = %cause,
                        "Upstream refused the token; retrying once with a renewed one.");
                    instruments::retry(&call.figures, &call.source);
                }
                Verdict::Retry { cause, after, kind } => {
                    let cause = secrets.scrub(&cause);
                    if attempt >= max_attempts {
                        return Err(CallError::new(
                            call,
                            CallFailure::RetriesExhausted {
                                attempts: attempt,
                                message: cause,
                                kind,
                            },
                        ));
                    }
                    let backoff = self.backoff(attempt);
                    // A Retry-After holds back every caller of the source, not just this one; the
                    // next `acquire` waits for it (and counts it as throttling).
                    // `after` is already held to the wait cap (see `attempt`).
                    let wait = match after {
                        Some(after) => {
                            source.limiter.block_for(after);
                            after.max(MIN_WAIT)
                        }
                        None => backoff,
                    };
                    if call
                        .deadline
                        .is_some_and(|d| limiter::instant_after(Instant::now(), wait) >= d)
                    {
                        return Err(deadline(call, format!("not retrying: {cause}")));
                    }
                    tracing::warn!(parent: &span, wait_ms = wait.as_millis() as u64, cause = %cause,
                        "Upstream call failed; retrying.");
                    instruments::retry(&call.figures, &call.source);
                    if after.is_none() {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    /// One attempt: a slot, then the credential current at that moment, the request, the whole
    /// answer, its headers (waits capped) fed to the limiter, and either the decoded value or a
    /// verdict, with the credential that was sent.
    pub(super) async fn attempt<T>(
        &self,
        call: &CallContext,
        source: &Source,
        auth: &SourceAuth,
        outgoing: &Outgoing<'_>,
        decode: &impl Fn(&[u8]) -> Result<T, Verdict>,
        repeat: bool,
    ) -> Result<T, (Attempt, Option<Credential>)> {
        let started = Instant::now();
        // No wait for budget may outlast the cap: the earlier of the run's deadline and the cap
        // (plus a grace: a block of exactly the cap set just after this call began waiting).
        let capped_at = limiter::instant_after(started, source.max_wait.saturating_add(WAIT_CAP_GRACE));
        let wait_deadline = call.deadline.map_or(capped_at, |d| d.min(capped_at));
        let permit = match source.limiter.acquire(Some(wait_deadline)).await {
            Ok(permit) => permit,
            Err(_) if call.deadline.is_some_and(|d| d <= capped_at) => return Err((Attempt::Deadline, None)),
            Err(_) => {
                return Err((
                    Attempt::WaitCapped(format!(
                        "the rate budget would hold this call back longer than rate_budget.max_wait_secs ({} s)",
                        source.max_wait.as_secs()
                    )),
                    None,
                ));
            }
        };
        instruments::throttled(
            &call.figures,
            &call.source,
            started.elapsed(),
            &source.throttled_ms_total,
        );
        // Chosen now, after the wait: a token read before it may have expired or been replaced
        // (Hydra revokes the old access token on refresh) while this call waited for its slot.
        // The guard is held until the answer is in: a renewal that kills this token waits for it.
        let (credential, token_requests) =
            crate::auth::counting_token_requests(auth.credential_for_call()).await;
        instruments::token_calls(&call.figures, token_requests);
        let (credential, in_flight) = match credential {
            Ok(credential) => credential,
            Err(e) if e.is_retryable() => {
                // A token endpoint that refused for its rate or is down says when to ask again
                // as a data answer does: the same headers, read and capped the same way (no
                // token, no call: the source waits with it).
                let after = e.unavailable_answer().and_then(|(status, headers)| {
                    let (rate, _) = RateHeaders::parse(headers, Utc::now())
                        .refused(status == StatusCode::TOO_MANY_REQUESTS)
                        .capped(source.max_wait);
                    source.limiter.refusal_wait(&rate)
                });
                // A retry's cause is text (the last one ends up in the call's error): the chain.
                let verdict = Verdict::Retry {
                    cause: crate::failure::chain_text(&e),
                    after,
                    kind: e.kind(),
                };
                return Err((Attempt::Verdict(verdict), None));
            }
            Err(e) => return Err((Attempt::Auth(e), None)),
        };
        let request = self
            .request(source, outgoing, &credential)
            .map_err(|verdict| (Attempt::Verdict(verdict), Some(credential.clone())))?;

        let sent_at = Instant::now();
        let sent = self.transport.send(request).await;
        // The call has ended for the limiter and for the token's renewal once the answer is in
        // (or failed).
        drop(permit);
        drop(in_flight);
        let failed = |verdict: Verdict| (Attempt::Verdict(verdict), Some(credential.clone()));
        let answer = match sent {
            Ok(answer) => answer,
            Err(error) => {
                // A refused answer's rate-limit headers count all the same.
                if let Some(headers) = error.headers() {
                    let (rate, _) = RateHeaders::parse(headers, Utc::now())
                        .sent_at(sent_at)
                        .refused(error.status() == Some(StatusCode::TOO_MANY_REQUESTS))
                        .capped(source.max_wait);
                    let _ = source.limiter.observe(&rate);
                }
                let verdict = classify::transport(&error);
                let bytes = match error {
                    TransportError::TooLarge { limit, .. } => limit,
                    _ => 0,
                };
                instruments::call(
                    &call.figures,
                    repeat,
                    &call.source,
                    instruments::status_class(error.status().map(|s| s.as_u16())),
                    verdict.outcome(),
                    bytes,
                );
                return Err(failed(verdict));
            }
        };
        let status = answer.status;
        let retry_after_text = answer.headers.get(RETRY_AFTER).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(64)
                .collect::<String>()
        });
        let (rate, overlong) = RateHeaders::parse(&answer.headers, Utc::now())
            .sent_at(sent_at)
            .refused(status == StatusCode::TOO_MANY_REQUESTS)
            .capped(source.max_wait);
        let body = answer.body;
        // A policy naming a window beyond the cap fails this call, like an overlong Retry-After.
        let held = source.limiter.observe(&rate);
        let status_label = instruments::status_class(Some(status.as_u16()));
        crate::stages::Stage::Fetch.add(started.elapsed());
        // An answer for the archive is compressed beside its decoding (see `crate::archive`).
        let compressing = (status.is_success() && call.archive.is_some())
            .then(|| crate::archive::Recorder::compress(body.clone()));
        let result = if status.is_success() {
            let decoding = std::time::Instant::now();
            let decoded = decode(&body);
            crate::stages::Stage::Decode.since(decoding);
            decoded
        } else {
            Err(classify::status(
                source.setup.answers,
                status,
                source.limiter.retry_wait(&rate),
                &body,
            ))
        };
        let outcome = match &result {
            Ok(_) => "success",
            Err(verdict) => verdict.outcome(),
        };
        instruments::call(
            &call.figures,
            repeat,
            &call.source,
            status_label,
            outcome,
            body.len(),
        );
        if let Some(held) = held {
            return Err((Attempt::WaitCapped(held), Some(credential)));
        }
        match result {
            Ok(value) => {
                // The load uses this answer: it goes into the window's archive as received.
                if let (Some(recorder), Some(compressing)) = (&call.archive, compressing) {
                    let waiting = std::time::Instant::now();
                    recorder.record(&outgoing.archived_as, compressing).await;
                    crate::stages::Stage::Compress.since(waiting);
                }
                Ok(value)
            }
            // The upstream wants more patience than the cap allows: every caller of the source
            // is held back for the cap (no longer), and this call fails saying why.
            Err(Verdict::Retry {
                cause,
                after: Some(after),
                ..
            }) if overlong.is_some_and(|o| o.header == "Retry-After") => {
                source.limiter.block_for(after);
                Err((
                    Attempt::WaitCapped(format!(
                        "{cause}; Retry-After: {} asks for a longer wait than rate_budget.max_wait_secs ({} s); \
                         the source is held back for {} s only",
                        retry_after_text.unwrap_or_default(),
                        source.max_wait.as_secs(),
                        source.max_wait.as_secs()
                    )),
                    Some(credential),
                ))
            }
            Err(Verdict::Retry {
                cause,
                after: None,
                kind,
            }) if !status.is_success()
                && let Some(text) = retry_after_text =>
            {
                let verdict = Verdict::Retry {
                    cause: format!("{cause} (Retry-After: {text} is no delay or date; backing off instead)"),
                    after: None,
                    kind,
                };
                Err(failed(verdict))
            }
            Err(verdict) => Err(failed(verdict)),
        }
    }

    /// The request of one attempt: method, URL, query, credential, API key, scope and body.
    pub(super) fn request(
        &self,
        source: &Source,
        outgoing: &Outgoing<'_>,
        credential: &Credential,
    ) -> Result<reqwest::RequestBuilder, Verdict> {
        let mut request = self
            .transport
            .request(outgoing.method.clone(), outgoing.url.clone())
            .header(ACCEPT, "application/json");
        if !outgoing.query.is_empty() {
            request = request.query(outgoing.query);
        }
        let mut authorization =
            HeaderValue::from_str(&credential.authorization()).map_err(|_| Verdict::Fatal {
                cause: "the credential is not a valid header value".into(),
                kind: FailureKind::Config,
            })?;
        authorization.set_sensitive(true);
        request = request.header(AUTHORIZATION, authorization);
        if let Some(key) = &source.setup.api_key {
            let mut value = HeaderValue::from_str(key.expose_secret()).map_err(|_| Verdict::Fatal {
                cause: "the API key is not a valid header value".into(),
                kind: FailureKind::Config,
            })?;
            value.set_sensitive(true);
            request = request.header("x-api-key", value);
        }
        match outgoing.scope {
            ScopeHeader::None => {}
            ScopeHeader::Company(id) => request = request.header("X-Company-ID", id.as_str()),
            ScopeHeader::Location(id) => request = request.header("X-Location-ID", id.as_str()),
        }
        if let Some(body) = &outgoing.body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        Ok(request)
    }

    /// Exponential backoff with jitter: `base × 2^(attempt-1)`, capped, minus up to half of it
    /// at random so that callers failing together do not retry together.
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let full = self
            .options
            .backoff_base
            .saturating_mul(1u32 << exponent)
            .min(self.options.backoff_max);
        let jitter = rand::rng().random_range(0.0..=0.5);
        full.mul_f64(1.0 - jitter).max(MIN_WAIT.min(full))
    }
}

/// How one attempt ended without a value.
pub(super) enum Attempt {
    Verdict(Verdict),
    /// The rate limit would not give a slot before the run's deadline.
    Deadline,
    /// The upstream (or the budget it taught) asked for a wait beyond `rate_budget.max_wait_secs`.
    WaitCapped(String),
    /// No credential could be had, and trying again will not help.
    Auth(crate::auth::AuthError),
}

pub(super) fn quota_spent_until(source: &Source) -> Option<DateTime<Utc>> {
    let mut guard = source.quota_spent_until.lock().unwrap_or_else(|e| e.into_inner());
    match *guard {
        Some(until) if Utc::now() < until => Some(until),
        Some(_) => {
            *guard = None;
            None
        }
        None => None,
    }
}

/// Daily quotas reset at midnight UTC.
pub(super) fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive() + chrono::Days::new(1);
    tomorrow.and_time(chrono::NaiveTime::MIN).and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthRegistry;
    use crate::config::Settings;
    use crate::executor::{BACKOFF_BASE, BACKOFF_MAX, ExecutorOptions};
    use std::sync::Arc;

    #[test]
    fn quotas_reset_at_the_next_utc_midnight() {
        let now = DateTime::parse_from_rfc3339("2025-03-30T23:59:59+00:00")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(next_utc_midnight(now).to_rfc3339(), "2025-03-31T00:00:00+00:00");
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let executor = Executor::with_options(
            Arc::new(Settings::default()),
            AuthRegistry::new(),
            ExecutorOptions::default(),
        )
        .expect("client builds");
        for attempt in 1..=10 {
            let full = BACKOFF_BASE.saturating_mul(1 << (attempt - 1)).min(BACKOFF_MAX);
            let wait = executor.backoff(attempt);
            assert!(wait <= full && wait >= full / 2, "attempt {attempt}: {wait:?}");
        }
    }
}
