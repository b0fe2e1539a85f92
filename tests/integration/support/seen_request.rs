//! A request as one of the fake servers received it, for tests to inspect afterwards.

use axum::http::{HeaderMap, Method, Uri};
use serde_json::Value;

/// One request as a fake server received it, accepted or not.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub path: String,
    /// The raw query string, if any (`client_version=…` on `/models`).
    pub query: Option<String>,
    pub method: String,
    /// The account the bearer was issued to (even if expired), `None` if unknown or absent.
    pub account_id: Option<String>,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body; `Null` when empty or not JSON.
    pub body: Value,
}

impl SeenRequest {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn capture(method: &Method, uri: &Uri, headers: &HeaderMap, body: Value) -> Self {
        Self {
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            method: method.to_string(),
            account_id: None,
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
        }
    }
}
