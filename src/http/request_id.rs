//! The id a server gives its answer: read from the response headers, and shown in every error
//! message the same way, ` (request-id X)`.

use reqwest::header::HeaderMap;

/// The answer's request-id (`request-id`, `x-request-id` or `x-amz-request-id`).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    ["request-id", "x-request-id", "x-amz-request-id"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok().map(str::to_owned))
}

/// ` (request-id X)` for an error message, or nothing when there is no id.
pub fn request_id_note(request_id: &Option<String>) -> String {
    request_id
        .as_ref()
        .map(|id| format!(" (request-id {id})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn one_shape_for_every_message() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_id_note(&request_id(&headers)), "");
        headers.insert("x-request-id", HeaderValue::from_static("req_1"));
        assert_eq!(
            request_id_note(&request_id(&headers)),
            " (request-id req_1)"
        );
    }
}
