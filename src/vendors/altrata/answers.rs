//! How Altrata's answers read (AWS AppSync behind API Gateway): an error names its kind in
//! `errorType` next to `message`; `unauthorized` (a field the subscription does not cover) and
//! `deprecated` leave the data usable as warnings; `error` says to discard the whole payload;
//! a 429 saying "Limit Exceeded" is the usage plan's quota spent ("Too Many Requests" is a call
//! that came too soon).

use crate::executor::classify::{Dialect, GraphqlError, standard_kind};

/// Altrata's answer dialect.
pub(super) struct Answers;

impl Dialect for Answers {
    fn error_kind(&self, error: &GraphqlError) -> Option<String> {
        error.error_type.clone().or_else(|| standard_kind(error))
    }

    fn warning_kinds(&self) -> &'static [&'static str] {
        &["unauthorized", "deprecated"]
    }

    fn discard_kinds(&self) -> &'static [&'static str] {
        &["error"]
    }

    fn quota_spent(&self, summary: &str) -> bool {
        summary.contains("Limit Exceeded")
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use serde_json::json;

    use super::*;
    use crate::executor::classify::{GraphqlClass, Verdict, graphql, status};

    fn read(value: serde_json::Value, has_data: bool) -> GraphqlClass {
        graphql(&Answers, &serde_json::from_value::<Vec<GraphqlError>>(value).expect("errors"), has_data)
    }

    #[test]
    fn unauthorized_and_deprecated_keep_the_data_as_warnings_and_error_discards_it() {
        match read(
            json!([
                {"errorType": "unauthorized", "message": "Not authorized to access netWorthUsd", "path": ["personIdSearch", "netWorthUsd"]},
                {"errorType": "deprecated", "message": "wxPersonId is deprecated"}
            ]),
            true,
        ) {
            GraphqlClass::Partial { warnings } => assert_eq!(warnings.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(
                json!([{"errorType": "deprecated", "message": "old"}, {"errorType": "error", "message": "Something went wrong", "path": ["events"]}]),
                false
            ),
            GraphqlClass::Failed(Verdict::Fatal { .. })
        ));
    }

    #[test]
    fn limit_exceeded_is_the_quota_and_too_many_requests_a_retry() {
        let s = |body: &str| status(&Answers, StatusCode::TOO_MANY_REQUESTS, None, body.as_bytes());
        assert!(matches!(s(r#"{"message":"Limit Exceeded"}"#), Verdict::QuotaExhausted { .. }));
        assert!(matches!(s(r#"{"message":"Too Many Requests"}"#), Verdict::Retry { .. }));
    }
}
