//! What the API returns, parsed leniently: unknown fields are ignored, optional ones may be
//! missing, and either pagination shape is accepted.

use serde::{Deserialize, Serialize};

/// A Files API object. One malformed entry must not spoil a page, so every field is read
/// leniently and what is wrong is said in [`FileObject::malformed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawFileObject")]
pub struct FileObject {
    pub id: String,
    /// Chosen by whoever created the file: hostile until sanitised.
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub created_at: String,
    pub downloadable: Option<bool>,
    pub expires_at: Option<String>,
    /// Why the entry cannot be used as listed (e.g. `size_bytes -1`, a missing `filename`, an
    /// id that is not one safe path segment); `None` when it is fine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed: Option<String>,
}

/// A file object as sent, every field optional and of any JSON type.
#[derive(Deserialize)]
struct RawFileObject {
    #[serde(default)]
    id: serde_json::Value,
    #[serde(default)]
    filename: serde_json::Value,
    #[serde(default)]
    mime_type: serde_json::Value,
    #[serde(default)]
    size_bytes: serde_json::Value,
    #[serde(default)]
    created_at: serde_json::Value,
    #[serde(default)]
    downloadable: serde_json::Value,
    #[serde(default)]
    expires_at: serde_json::Value,
}

impl From<RawFileObject> for FileObject {
    fn from(raw: RawFileObject) -> FileObject {
        use serde_json::Value;
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let mut problems = Vec::new();
        let mut required = |name: &str, value: &Value| {
            text(value).unwrap_or_else(|| {
                problems.push(format!("{name} is {}", describe(value)));
                String::new()
            })
        };
        let id = required("id", &raw.id);
        let filename = required("filename", &raw.filename);
        let created_at = required("created_at", &raw.created_at);
        let size_bytes = raw.size_bytes.as_u64().unwrap_or_else(|| {
            problems.push(format!("size_bytes is {}", describe(&raw.size_bytes)));
            0
        });
        if !id.is_empty()
            && let Err(reason) = check_id(&id)
        {
            problems.push(reason);
        }
        FileObject {
            id,
            filename,
            mime_type: text(&raw.mime_type).unwrap_or_default(),
            size_bytes,
            created_at,
            downloadable: raw.downloadable.as_bool(),
            expires_at: text(&raw.expires_at),
            malformed: (!problems.is_empty()).then(|| problems.join(", ")),
        }
    }
}

/// A JSON value as a short phrase for a message: `missing`, `null`, `-1`, `"x"`.
fn describe(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "missing or null".into(),
        other => {
            let shown = other.to_string();
            match shown.char_indices().nth(40) {
                Some((cut, _)) => format!("{}…", &shown[..cut]),
                None => shown,
            }
        }
    }
}

/// An id must be one safe path segment before it goes into a request path: not empty, not
/// `.` or `..`, no `/` or `\\`, no control characters (`..` would otherwise turn
/// `/v1/files/../content` into `/v1/files/content`).
pub fn check_id(id: &str) -> Result<(), String> {
    let bad = id.is_empty()
        || id == "."
        || id == ".."
        || id.len() > 1024
        || id.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(format!(
            "id {} is not a single safe path segment",
            describe(&serde_json::Value::String(id.to_owned()))
        ));
    }
    Ok(())
}

/// A Message Batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub id: String,
    pub processing_status: String,
    #[serde(default)]
    pub request_counts: RequestCounts,
    pub created_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub results_url: Option<String>,
}

impl Batch {
    pub fn is_ended(&self) -> bool {
        self.processing_status == "ended"
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    #[serde(default)]
    pub processing: u64,
    #[serde(default)]
    pub succeeded: u64,
    #[serde(default)]
    pub errored: u64,
    #[serde(default)]
    pub canceled: u64,
    #[serde(default)]
    pub expired: u64,
}

impl RequestCounts {
    /// Results an ended batch must have: one per request.
    pub fn total(&self) -> u64 {
        self.processing + self.succeeded + self.errored + self.canceled + self.expired
    }
}

/// One page of a list, in either shape: GA (`next_page`) or beta (`has_more` + `last_id`).
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub next_page: Option<String>,
    #[serde(default)]
    pub has_more: Option<bool>,
    #[serde(default)]
    pub last_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_page_shapes_and_ignores_unknown_fields() {
        let ga: Page<FileObject> = serde_json::from_str(
            r#"{"data":[{"id":"file_1","type":"file","filename":"a.csv","mime_type":"text/csv",
                "size_bytes":3,"created_at":"2026-08-01T00:00:00Z","downloadable":true,
                "expires_at":null,"new_field":1}],"next_page":"page_2"}"#,
        )
        .unwrap();
        assert_eq!(ga.data[0].filename, "a.csv");
        assert_eq!(ga.next_page.as_deref(), Some("page_2"));
        let beta: Page<FileObject> = serde_json::from_str(
            r#"{"data":[],"has_more":true,"first_id":null,"last_id":"file_9"}"#,
        )
        .unwrap();
        assert_eq!(
            (beta.has_more, beta.last_id.as_deref()),
            (Some(true), Some("file_9"))
        );
    }

    #[test]
    fn a_malformed_entry_is_kept_with_its_reason_and_spoils_nothing_else() {
        let page: Page<FileObject> = serde_json::from_str(
            r#"{"data":[
                {"id":"file_1","filename":"a.csv","size_bytes":3,"created_at":"2026-08-01"},
                {"id":"file_2","filename":"b.csv","size_bytes":-1,"created_at":"2026-08-01"},
                {"id":"file_3","filename":null,"size_bytes":3,"created_at":"2026-08-01"},
                {"id":"file_4","size_bytes":3,"created_at":"2026-08-01"},
                {"id":"..","filename":"c","size_bytes":3,"created_at":"2026-08-01"},
                {"id":"a/b","filename":"c","size_bytes":3,"created_at":"2026-08-01"}
            ]}"#,
        )
        .unwrap();
        let problems: Vec<Option<&str>> =
            page.data.iter().map(|f| f.malformed.as_deref()).collect();
        assert_eq!(problems[0], None);
        assert_eq!(problems[1], Some("size_bytes is -1"));
        assert_eq!(problems[2], Some("filename is missing or null"));
        assert_eq!(problems[3], Some("filename is missing or null"));
        assert!(
            problems[4]
                .unwrap()
                .contains("not a single safe path segment")
        );
        assert!(
            problems[5]
                .unwrap()
                .contains("not a single safe path segment")
        );
    }

    #[test]
    fn counts_results_of_a_batch() {
        let batch: Batch = serde_json::from_str(
            r#"{"id":"msgbatch_1","processing_status":"ended","created_at":"2026-08-01T00:00:00Z",
                "request_counts":{"processing":0,"succeeded":5,"errored":1,"canceled":0,"expired":2},
                "results_url":"/v1/messages/batches/msgbatch_1/results"}"#,
        )
        .unwrap();
        assert!(batch.is_ended());
        assert_eq!(batch.request_counts.total(), 8);
    }
}
