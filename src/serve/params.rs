//! XRPC query parameters, read from the raw query string: a single-valued one may be given at
//! most once, and a missing, empty or repeated one is refused as `400 InvalidRequest` in XRPC
//! JSON (axum's `Query` refuses in plain text, and takes the last of repeated names silently).
//! An array parameter (`cids` of `getBlocks`) is the name repeated, up to a stated count.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::Refusal;

/// The query parameters of one call, by name, each with every value given.
#[derive(Debug)]
pub(super) struct Params(HashMap<String, Vec<String>>);

/// Query strings longer than this are refused unread.
const MAX_QUERY_BYTES: usize = 64 * 1024;

impl Params {
    pub(super) fn parse(query: &str) -> Result<Self, Refusal> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(Refusal::invalid("the query is too long"));
        }
        let mut params: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            params
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        Ok(Self(params))
    }

    /// A parameter the method needs.
    pub(super) fn required(&self, name: &str) -> Result<&str, Refusal> {
        self.optional(name)?
            .ok_or_else(|| Refusal::invalid(format!("`{name}` is required")))
    }

    /// A parameter the method may take (`None`: not given).
    pub(super) fn optional(&self, name: &str) -> Result<Option<&str>, Refusal> {
        match self.0.get(name).map(Vec::as_slice) {
            None => Ok(None),
            Some([value]) if !value.is_empty() => Ok(Some(value)),
            Some([_]) => Err(Refusal::invalid(format!("`{name}` is empty"))),
            Some(_) => Err(Refusal::invalid(format!(
                "`{name}` is given more than once"
            ))),
        }
    }

    /// Every value of an array parameter: at least one, at most `max`.
    pub(super) fn list(&self, name: &str, max: usize) -> Result<&[String], Refusal> {
        match self.0.get(name) {
            None => Err(Refusal::invalid(format!("`{name}` is required"))),
            Some(values) if values.len() > max => Err(Refusal::invalid(format!(
                "`{name}` is given {} times; at most {max} are answered at once",
                values.len()
            ))),
            Some(values) => Ok(values),
        }
    }

    /// Every value of an array parameter that may be left out: at most `max`.
    pub(super) fn optional_list(&self, name: &str, max: usize) -> Result<&[String], Refusal> {
        match self.0.get(name) {
            None => Ok(&[]),
            Some(_) => self.list(name, max),
        }
    }

    /// `since`, when given: a revision (a TID), else 400 `InvalidRequest`.
    pub(super) fn since(&self) -> Result<Option<String>, Refusal> {
        match self.optional("since")? {
            Some(rev) if crate::repo::tid::parse(rev).is_none() => {
                Err(Refusal::invalid("`since` is not a revision (a TID)"))
            }
            rev => Ok(rev.map(str::to_string)),
        }
    }

    /// A page size: `default` when not given, else a whole number from 1 to `max`.
    pub(super) fn limit(&self, default: usize, max: usize) -> Result<usize, Refusal> {
        match self.optional("limit")? {
            None => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    Refusal::invalid(format!("`limit` must be a whole number from 1 to {max}"))
                }),
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
            let p = Params::parse(query).unwrap();
            let refused = p.required("did").and(p.optional("x")).unwrap_err();
            assert_eq!(refused.status, 400, "{query}");
        }
        let p = Params::parse("cids=a&cids=b&limit=0").unwrap();
        assert_eq!(p.list("cids", 2).unwrap(), ["a", "b"]);
        assert!(p.list("cids", 1).is_err());
        assert!(p.list("other", 5).is_err());
        assert!(p.limit(500, 1000).is_err());
        assert_eq!(Params::parse("").unwrap().limit(500, 1000).unwrap(), 500);
        assert_eq!(
            Params::parse("limit=7").unwrap().limit(500, 1000).unwrap(),
            7
        );
        assert!(Params::parse(&"a".repeat(MAX_QUERY_BYTES + 1)).is_err());
    }
}
