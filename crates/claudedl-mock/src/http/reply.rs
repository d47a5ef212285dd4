//! A response decided under a server's state lock, turned into an HTTP response after the lock
//! is released (when its body, of the server's own type `B`, becomes a stream).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

/// A status, headers and a body still to be turned into a [`Body`].
#[derive(Debug)]
pub(crate) struct Reply<B> {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: B,
}

impl<B: Default> Reply<B> {
    /// `status`, no headers, the default (empty) body.
    pub(crate) fn new(status: StatusCode) -> Self {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: B::default(),
        }
    }
}

impl<B> Reply<B> {
    /// Sets header `name` (replacing any value). Panics if `value` is not a valid header value.
    pub(crate) fn set(&mut self, name: HeaderName, value: impl ToString) {
        let value = HeaderValue::from_str(&value.to_string()).expect("a valid header value");
        self.headers.insert(name, value);
    }

    /// The HTTP response, with the body `make_body` makes of ours.
    pub(crate) fn respond(self, make_body: impl FnOnce(B) -> Body) -> Response {
        let mut response = Response::new(make_body(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}
