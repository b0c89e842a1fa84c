//! XRPC query parameters, read from the raw query string: each may be given at most once,
//! and a missing, empty or repeated one is refused as `400 InvalidRequest` in XRPC JSON (axum's
//! `Query` refuses in plain text, and takes the last of repeated names silently).

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::Refusal;

/// The query parameters of one call, by name.
#[derive(Debug)]
pub(super) struct Params(HashMap<String, String>);

impl Params {
    pub(super) fn parse(query: &str) -> Result<Self, Refusal> {
        let mut params = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if params
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                return Err(Refusal::invalid(format!(
                    "`{name}` is given more than once"
                )));
            }
        }
        Ok(Self(params))
    }

    /// A parameter the method needs.
    pub(super) fn required(&self, name: &str) -> Result<&str, Refusal> {
        match self.0.get(name) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(Refusal::invalid(format!("`{name}` is required"))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        Self::parse(parts.uri.query().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_parameter_once_and_present() {
        let p = Params::parse("did=did%3Aplc%3Aabc&cid=x").unwrap();
        assert_eq!(p.required("did").unwrap(), "did:plc:abc");
        assert_eq!(p.required("cid").unwrap(), "x");
        for (query, name) in [("", "did"), ("did=", "did"), ("cid=x", "did")] {
            let refused = Params::parse(query).unwrap().required(name).unwrap_err();
            assert_eq!(refused.name, "InvalidRequest", "{query}");
        }
        for query in ["did=a&did=b", "did=a&did=a", "x=1&did=a&x=2"] {
            let refused = Params::parse(query).unwrap_err();
            assert_eq!(refused.status, 400, "{query}");
        }
    }
}
