//! JSON log lines: one object per event, `timestamp` (RFC 3339, UTC), `level`, `event`, then
//! the event's fields at top level.
//!
//! `event` is the event's own `event` field when it has one (`retry`, `wait`, `throttled`,
//! `endpoint_switch`, `run_summary`, `file_done`, …), else the message in snake case. A field
//! the event declares but leaves empty (an `Option` that is `None`) is `null`, so every event
//! of one kind has the same keys. Spans are not recorded; a field stamped with
//! [`stamp_every_line`] (a fleet worker's id) is on every line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, Layer};

/// Keys written before the event's fields; fields of the same name get a `field_` prefix.
const RESERVED: [&str; 5] = ["timestamp", "level", "event", "message", "target"];
/// Words of a message kept in a derived `event` name.
const EVENT_WORDS: usize = 6;

/// A field written on every line from now on (first call wins).
static STAMP: std::sync::OnceLock<(&'static str, String)> = std::sync::OnceLock::new();

/// Put `key: value` on every line from now on (the worker id of a fleet worker).
pub fn stamp_every_line(key: &'static str, value: String) {
    let _ = STAMP.set((key, value));
}

/// A layer writing each event as one JSON line to `W`.
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W) -> JsonLayer<W> {
        JsonLayer { make_writer }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = json_line(event, &timestamp());
        line.push('\n');
        let mut writer = self.make_writer.make_writer_for(event.metadata());
        let _ = writer.write_all(line.as_bytes());
    }
}

fn timestamp() -> String {
    let mut text = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut text));
    text
}

/// The line for `event` (without the newline).
pub fn json_line(event: &Event<'_>, timestamp: &str) -> String {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut fields = fields.0;
    for field in event.metadata().fields() {
        fields.entry(field.name().to_owned()).or_insert(Value::Null);
    }
    if let Some((key, value)) = STAMP.get() {
        fields.insert((*key).to_owned(), Value::from(value.as_str()));
    }
    let message = fields.remove("message").unwrap_or(Value::Null);
    let name = match fields.remove("event") {
        Some(Value::String(name)) => name,
        _ => snake_case(message.as_str().unwrap_or("event")),
    };
    let level = event.metadata().level().as_str().to_ascii_lowercase();
    let head = [
        ("timestamp", Value::from(timestamp)),
        ("level", Value::from(level)),
        ("event", Value::from(name)),
        ("message", message),
        ("target", Value::from(event.metadata().target())),
    ];
    let rest = fields.into_iter().map(|(key, value)| {
        let key = if RESERVED.contains(&key.as_str()) {
            format!("field_{key}")
        } else {
            key
        };
        (key, value)
    });
    let mut out = String::from("{");
    let pairs = head.into_iter().map(|(k, v)| (k.to_owned(), v)).chain(rest);
    for (i, (key, value)) in pairs.enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(out, "{comma}{}:{value}", Value::from(key));
    }
    out.push('}');
    out
}

/// `"Retrying API call: 503"` → `"retrying_api_call"`: the words before any `:`, at most six.
pub fn snake_case(message: &str) -> String {
    let head = message.split(':').next().unwrap_or_default();
    let words = head
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(EVENT_WORDS)
        .map(str::to_lowercase);
    let name = words.collect::<Vec<_>>().join("_");
    if name.is_empty() {
        "event".to_owned()
    } else {
        name
    }
}

/// An event's fields as JSON values.
#[derive(Default)]
struct Fields(BTreeMap<String, Value>);

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn lines(emit: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(captured.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn fields_are_flat_and_event_comes_from_the_field_or_the_message() {
        let sha: Option<&str> = None;
        let found = lines(|| {
            tracing::info!(
                event = "file_done",
                bytes_downloaded = 5u64,
                sha256 = sha,
                "done"
            );
            tracing::warn!(path = %"/tmp/x", "Checkpoint failed: disk full");
        });
        assert_eq!(found[0]["event"], "file_done");
        assert_eq!(found[0]["level"], "info");
        assert_eq!(found[0]["bytes_downloaded"], 5);
        assert_eq!(found[0]["sha256"], Value::Null);
        assert_eq!(found[1]["event"], "checkpoint_failed");
        assert_eq!(found[1]["path"], "/tmp/x");
        let stamp = found[1]["timestamp"].as_str().unwrap();
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
    }

    #[test]
    fn snake_case_keeps_the_first_words_before_a_colon() {
        assert_eq!(snake_case("Retrying API call"), "retrying_api_call");
        assert_eq!(
            snake_case("checkpoint failed: disk full"),
            "checkpoint_failed"
        );
        assert_eq!(snake_case("  "), "event");
    }
}
