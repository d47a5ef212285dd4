//! What the API returns, parsed leniently: unknown fields are ignored, optional ones may be
//! missing, and either pagination shape is accepted.

use serde::{Deserialize, Serialize};

/// A Files API object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileObject {
    pub id: String,
    /// Chosen by whoever created the file: hostile until sanitised.
    pub filename: String,
    #[serde(default)]
    pub mime_type: String,
    pub size_bytes: u64,
    pub created_at: String,
    #[serde(default)]
    pub downloadable: Option<bool>,
    #[serde(default)]
    pub expires_at: Option<String>,
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
