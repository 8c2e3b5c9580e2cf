//! How Roubler's answers read: an error names its kind in a top-level `name` next to `message`
//! (`Authentication`, `Forbidden`), else where GraphQL servers commonly do.

use crate::executor::classify::{Dialect, GraphqlError, standard_kind};

/// Roubler's answer dialect.
pub(super) struct Answers;

impl Dialect for Answers {
    fn error_kind(&self, error: &GraphqlError) -> Option<String> {
        error.name.clone().or_else(|| standard_kind(error))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::executor::classify::{GraphqlClass, Verdict, graphql};

    #[test]
    fn authentication_refreshes_the_token_and_forbidden_refuses_the_scope() {
        let read = |value| graphql(&Answers, &serde_json::from_value::<Vec<GraphqlError>>(value).expect("errors"), false);
        assert!(matches!(
            read(json!([{"name": "Authentication", "message": "Access token is missing or invalid."}])),
            GraphqlClass::Failed(Verdict::RefreshAndRetryOnce { .. })
        ));
        assert!(matches!(
            read(json!([{"name": "Forbidden", "message": "Access denied: you do not have access to location 99."}])),
            GraphqlClass::Failed(Verdict::ScopeRefused { .. })
        ));
    }
}
