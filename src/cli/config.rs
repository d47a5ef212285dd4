//! `claudedl config show`: every setting in effect and where it came from. The API key is
//! shown redacted, never itself.

use claudedl::config::{Setting, Settings, Source, defaults};
use serde_json::{Value, json};

use super::args::ConfigCommand;
use super::common::{ExitStatus, GlobalArgs};

pub fn run(command: ConfigCommand, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let ConfigCommand::Show { json, .. } = command;
    let rows = rows(&global.settings);
    if json {
        println!("{}", to_json(&global.settings, &rows));
    } else {
        print_text(&global.settings, &rows);
    }
    Ok(ExitStatus::Success)
}

/// One line of the listing.
struct Row {
    section: &'static str,
    key: &'static str,
    value: Value,
    source: String,
    /// The rule that applies when the setting is unset (from [`defaults::rule`]).
    note: Option<String>,
}

/// A setting's row; a default that follows a rule says which.
fn row<T: Into<Value> + Clone>(
    section: &'static str,
    key: &'static str,
    setting: &Setting<T>,
) -> Row {
    let note = (setting.source == Source::Default)
        .then(|| defaults::rule(section, key))
        .flatten();
    Row {
        section,
        key,
        value: setting.value.clone().into(),
        source: setting.source.to_string(),
        note,
    }
}

/// A setting that may be unset; the defaults table says what then applies.
fn optional<T: Into<Value> + Clone>(
    section: &'static str,
    key: &'static str,
    setting: Option<&Setting<T>>,
) -> Row {
    match setting {
        Some(setting) => row(section, key, setting),
        None => Row {
            section,
            key,
            value: Value::Null,
            source: Source::Default.to_string(),
            note: defaults::rule(section, key),
        },
    }
}

fn display<T: ToString>(setting: &Setting<T>) -> Setting<String> {
    Setting::new(setting.value.to_string(), setting.source.clone())
}

fn path(setting: &Setting<std::path::PathBuf>) -> Setting<String> {
    Setting::new(setting.value.display().to_string(), setting.source.clone())
}

fn rows(s: &Settings) -> Vec<Row> {
    let key = s
        .api_key
        .as_ref()
        .map(|k| Setting::new(k.value.redacted(), k.source.clone()));
    let token = s
        .auth_token
        .as_ref()
        .map(|t| Setting::new(t.value.redacted(), t.source.clone()));
    // The database URL may hold a password: shown without it.
    let db =
        s.db.as_ref()
            .map(|d| Setting::new(d.value.redacted(), d.source.clone()));
    vec![
        optional("auth", "api_key", key.as_ref()),
        optional("auth", "api_key_env", s.api_key_env.as_ref()),
        optional("auth", "auth_token", token.as_ref()),
        row("network", "base_url", &s.base_url),
        optional("network", "preset", s.preset.as_ref().map(display).as_ref()),
        row("network", "connect_timeout", &s.connect_timeout),
        row("network", "read_timeout", &s.read_timeout),
        row("network", "max_retries", &s.max_retries),
        row("network", "connections", &s.connections),
        row("network", "max_connections", &s.max_connections),
        optional(
            "network",
            "requests_per_minute",
            s.requests_per_minute.as_ref(),
        ),
        row("network", "endpoints", &s.endpoints),
        row("network", "overload_pause", &s.overload_pause),
        optional(
            "network",
            "limit_rate",
            s.limit_rate.as_ref().map(bytes).as_ref(),
        ),
        optional("network", "cacert", s.cacert.as_ref().map(path).as_ref()),
        row("network", "insecure", &s.insecure),
        optional("network", "proxy", s.proxy.as_ref()),
        row("network", "transfer_http", &display(&s.transfer_http)),
        row("storage", "base_dir", &path(&s.data_dir)),
        row("storage", "chunk_size", &bytes(&s.chunk_size)),
        row("crypt", "recipients", &s.crypt_recipients),
        optional(
            "crypt",
            "recipients_file",
            s.crypt_recipients_file.as_ref().map(path).as_ref(),
        ),
        optional("fleet", "db", db.as_ref()),
        row("log", "format", &display(&s.log_format)),
        optional("log", "file", s.log_file.as_ref().map(path).as_ref()),
        optional("log", "level", s.log_level.as_ref().map(display).as_ref()),
    ]
}

fn bytes(setting: &Setting<bytesize::ByteSize>) -> Setting<u64> {
    Setting::new(setting.value.as_u64(), setting.source.clone())
}

fn to_json(settings: &Settings, rows: &[Row]) -> Value {
    let mut out = json!({ "config_file": settings.config_file });
    for row in rows {
        let mut entry = json!({ "value": row.value, "source": row.source });
        if let Some(note) = &row.note {
            entry["note"] = note.as_str().into();
        }
        out[row.section][row.key] = entry;
    }
    out
}

fn print_text(settings: &Settings, rows: &[Row]) {
    match &settings.config_file {
        Some(path) => println!("config file: {}", path.display()),
        None => println!("config file: none found"),
    }
    for row in rows {
        let name = format!("{}.{}", row.section, row.key);
        let value = match &row.value {
            Value::Null => "-".to_owned(),
            Value::String(text) => text.clone(),
            Value::Array(items) => {
                let items = items.iter().map(|v| v.as_str().unwrap_or_default());
                format!("[{}]", items.collect::<Vec<_>>().join(", "))
            }
            other => other.to_string(),
        };
        let note = row
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        println!("{name:<29} {value:<40} {}{note}", row.source);
    }
}
