//! How Retarus' answers read: graphql-java's `extensions.classification` carries an error's kind
//! (the standard reading), and nothing it says keeps an answer's data as a partial result.

use crate::executor::classify::Dialect;

/// Retarus' answer dialect.
pub(super) struct Answers;

impl Dialect for Answers {}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::executor::classify::{GraphqlClass, GraphqlError, Verdict, graphql};

    #[test]
    fn a_forbidden_customer_is_a_refused_scope_and_another_vendors_warning_is_no_warning() {
        let errors: Vec<GraphqlError> = serde_json::from_value(json!([
            {"message": "Access denied", "extensions": {"classification": "FORBIDDEN"}}
        ]))
        .expect("errors");
        assert!(matches!(
            graphql(&Answers, &errors, false),
            GraphqlClass::Failed(Verdict::ScopeRefused { .. })
        ));
        // Altrata's `unauthorized` keeps data as a warning there; here it is no rule of Retarus'.
        let errors: Vec<GraphqlError> = serde_json::from_value(json!([
            {"errorType": "unauthorized", "message": "withheld", "path": ["x"]}
        ]))
        .expect("errors");
        assert!(matches!(
            graphql(&Answers, &errors, true),
            GraphqlClass::Failed(Verdict::Fatal { .. })
        ));
    }
}
