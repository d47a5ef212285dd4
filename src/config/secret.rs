//! A secret (the API key) that never shows itself in `Debug`, `Display` or serialised output.

/// A secret string; only [`Secret::expose`] reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Keys shorter than this show no characters at all when redacted.
const SHOW_TAIL_FROM: usize = 24;

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself: only for the request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A form safe to print: `sk-ant-…abcd (108 chars)` for a long key (its public prefix and
    /// last four characters), `<set, 12 chars>` for a short one.
    pub fn redacted(&self) -> String {
        let chars = self.0.chars().count();
        if chars < SHOW_TAIL_FROM {
            return format!("<set, {chars} chars>");
        }
        let tail: String = self.0.chars().skip(chars - 4).collect();
        let prefix = if self.0.starts_with("sk-ant-") {
            "sk-ant-"
        } else {
            ""
        };
        format!("{prefix}…{tail} ({chars} chars)")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_never_shows_the_key() {
        let key = format!("sk-ant-api03-{}-abcd", "x".repeat(90));
        let secret = Secret::new(key.clone());
        let shown = secret.redacted();
        assert_eq!(shown, format!("sk-ant-…abcd ({} chars)", key.len()));
        assert!(!format!("{secret:?}").contains("xxxx"));
        assert_eq!(Secret::new("short-key").redacted(), "<set, 9 chars>");
    }
}
