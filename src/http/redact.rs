//! Making URLs safe to print: no user info, no query values (signed URLs carry their secret
//! there), no fragment.

use url::Url;

/// The URL as it may appear in logs, errors and state files.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    if shown.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(key, _)| key.into_owned()).collect();
        let query = keys
            .iter()
            .map(|key| format!("{key}=REDACTED"))
            .collect::<Vec<_>>()
            .join("&");
        shown.set_query(if query.is_empty() { None } else { Some(&query) });
    }
    shown.to_string()
}

/// Whether two URLs share scheme, host and port (the origin credentials are bound to).
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_user_info_query_values_and_fragment() {
        let url = Url::parse("https://user:pw@host.example/a/b.bin?X-Amz-Signature=abc&id=7#frag")
            .unwrap();
        assert_eq!(
            redact_url(&url),
            "https://host.example/a/b.bin?X-Amz-Signature=REDACTED&id=REDACTED"
        );
    }

    #[test]
    fn leaves_plain_urls_alone() {
        let url = Url::parse("http://127.0.0.1:8080/file.bin").unwrap();
        assert_eq!(redact_url(&url), "http://127.0.0.1:8080/file.bin");
    }

    #[test]
    fn origin_compares_scheme_host_and_port() {
        let a = Url::parse("http://127.0.0.1:1/x").unwrap();
        assert!(same_origin(
            &a,
            &Url::parse("http://127.0.0.1:1/y").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &Url::parse("http://127.0.0.1:2/x").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &Url::parse("https://127.0.0.1:1/x").unwrap()
        ));
    }
}
