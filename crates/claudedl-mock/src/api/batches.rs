//! Message batches: the batch object and the JSONL results, in a shuffled but fixed order.

use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use super::clock::{DAY_SECS, Timestamp, parse_rfc3339};
use super::files::splitmix64;
use super::listing::{Keyed, Sequence, SortKey, newer_range, older_range};
use super::{MockBatch, MockResult};

/// A batch ends this long after it was created.
const PROCESSING_SECS: i64 = 60 * 60;
/// A batch expires this long after it was created.
const EXPIRY_SECS: i64 = DAY_SECS;

/// All batches, ascending by key.
#[derive(Debug)]
pub(super) struct BatchStore {
    batches: Vec<Arc<StoredBatch>>,
}

/// One batch and its results body, rendered once on first use.
#[derive(Debug)]
pub(super) struct StoredBatch {
    key: SortKey,
    pub(super) batch: MockBatch,
    results: OnceLock<Bytes>,
}

impl Keyed for Arc<StoredBatch> {
    fn key(&self) -> &SortKey {
        &self.key
    }
}

impl BatchStore {
    pub(super) fn new(batches: Vec<MockBatch>) -> Self {
        let mut batches: Vec<Arc<StoredBatch>> = batches
            .into_iter()
            .map(|batch| Arc::new(StoredBatch::new(batch)))
            .collect();
        batches.sort_by(|a, b| a.key.cmp(&b.key));
        BatchStore { batches }
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<StoredBatch>> {
        self.batches
            .iter()
            .find(|stored| stored.key.id == id)
            .cloned()
    }

    /// The results body of an ended batch.
    pub(super) fn results_body(&self, id: &str) -> Option<Bytes> {
        let stored = self.get(id)?;
        stored.batch.ended.then(|| stored.results_body())
    }

    fn compare(&self, at: usize, key: &SortKey) -> Ordering {
        self.batches[at].key.cmp(key)
    }
}

impl Sequence for BatchStore {
    type Item = Arc<StoredBatch>;

    fn older(&self, key: Option<&SortKey>, n: usize) -> Vec<Arc<StoredBatch>> {
        let range = older_range(self.batches.len(), key, n, |at, key| self.compare(at, key));
        self.batches[range].iter().rev().cloned().collect()
    }

    fn newer(&self, key: &SortKey, n: usize) -> Vec<Arc<StoredBatch>> {
        let range = newer_range(self.batches.len(), key, n, |at, key| self.compare(at, key));
        self.batches[range].to_vec()
    }

    fn key_of(&self, id: &str) -> Option<SortKey> {
        self.get(id).map(|stored| stored.key.clone())
    }
}

/// The JSON batch object.
#[derive(Debug, Serialize)]
pub(super) struct BatchObject<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    object_type: &'static str,
    processing_status: &'static str,
    request_counts: RequestCounts,
    ended_at: Option<String>,
    created_at: &'a str,
    expires_at: String,
    cancel_initiated_at: Option<String>,
    archived_at: Option<String>,
    results_url: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct RequestCounts {
    processing: usize,
    succeeded: usize,
    errored: usize,
    canceled: usize,
    expired: usize,
}

impl RequestCounts {
    fn of(batch: &MockBatch) -> Self {
        let mut counts = RequestCounts::default();
        if !batch.ended {
            counts.processing = batch.results.len();
            return counts;
        }
        for result in &batch.results {
            match result.result_type.as_str() {
                "succeeded" => counts.succeeded += 1,
                "errored" => counts.errored += 1,
                "canceled" => counts.canceled += 1,
                _ => counts.expired += 1,
            }
        }
        counts
    }
}

impl StoredBatch {
    fn new(batch: MockBatch) -> Self {
        let time = parse_rfc3339(&batch.created_at).unwrap_or_else(|| {
            panic!(
                "batch {}: created_at {:?} is not RFC 3339",
                batch.id, batch.created_at
            )
        });
        let key = SortKey {
            time,
            id: batch.id.clone(),
        };
        StoredBatch {
            key,
            batch,
            results: OnceLock::new(),
        }
    }

    /// The path of the results.
    pub(super) fn results_path(&self) -> String {
        format!("/v1/messages/batches/{}/results", self.batch.id)
    }

    /// When the batch ended (a fixed time after its creation).
    pub(super) fn ended_at(&self) -> Timestamp {
        Timestamp::from_secs(self.key.time.secs + PROCESSING_SECS)
    }

    /// The batch object; `results_base` prefixes the results path (empty: relative URL).
    pub(super) fn object(&self, results_base: &str) -> BatchObject<'_> {
        let ended = self.batch.ended;
        BatchObject {
            id: &self.batch.id,
            object_type: "message_batch",
            processing_status: if ended { "ended" } else { "in_progress" },
            request_counts: RequestCounts::of(&self.batch),
            ended_at: ended.then(|| self.ended_at().to_rfc3339()),
            created_at: &self.batch.created_at,
            expires_at: Timestamp::from_secs(self.key.time.secs + EXPIRY_SECS).to_rfc3339(),
            cancel_initiated_at: None,
            archived_at: None,
            results_url: ended.then(|| format!("{results_base}{}", self.results_path())),
        }
    }

    /// The JSONL results: one line per result, in a shuffled order fixed by the batch id.
    pub(super) fn results_body(&self) -> Bytes {
        self.results
            .get_or_init(|| render_results(&self.batch))
            .clone()
    }
}

fn render_results(batch: &MockBatch) -> Bytes {
    let mut order: Vec<usize> = (0..batch.results.len()).collect();
    shuffle(&mut order, fnv1a(batch.id.as_bytes()));
    let mut body = Vec::new();
    for index in order {
        let line = result_line(&batch.id, index, &batch.results[index]);
        serde_json::to_writer(&mut body, &line).expect("writing JSON to a Vec cannot fail");
        body.push(b'\n');
    }
    Bytes::from(body)
}

/// One results line, with a small deterministic payload.
fn result_line(batch_id: &str, index: usize, result: &MockResult) -> serde_json::Value {
    let custom_id = &result.custom_id;
    let outcome = match result.result_type.as_str() {
        "succeeded" => json!({
            "type": "succeeded",
            "message": {
                "id": format!("msg_mock_{:016x}", fnv1a(format!("{batch_id}/{custom_id}").as_bytes())),
                "type": "message",
                "role": "assistant",
                "model": "claude-mock-1",
                "content": [{"type": "text", "text": format!("Mock answer #{index} for {custom_id}.")}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 10 + index % 90, "output_tokens": 5 + index % 45}
            }
        }),
        "errored" => json!({
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": format!("mock: request {custom_id} is invalid")},
                "request_id": null
            }
        }),
        other => json!({ "type": other }),
    };
    json!({ "custom_id": custom_id, "result": outcome })
}

/// Fisher–Yates, driven by SplitMix64 from `seed`.
fn shuffle(items: &mut [usize], seed: u64) {
    let mut state = seed;
    for last in (1..items.len()).rev() {
        state = splitmix64(state);
        let pick = (state % (last as u64 + 1)) as usize;
        items.swap(last, pick);
    }
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01B3)
    })
}
