//! The original design's INI format, read with `configparser`: `[section]`, `key = value` (or
//! `key: value`), `#` and `;` comments on their own line or after a value (`timeout = 30  #
//! seconds`). Names are case-insensitive. A value cannot contain `#` or `;`.

use std::collections::BTreeMap;
use std::path::Path;

use super::ConfigError;
use super::schema::{RawDoc, RawValue};

/// Where configparser puts keys that come before any `[section]`.
const NO_SECTION: &str = "";

pub fn parse(path: &Path, text: &str) -> Result<RawDoc, ConfigError> {
    let mut parser = configparser::ini::Ini::new();
    parser.set_default_section(NO_SECTION);
    let map = parser
        .read(text.to_owned())
        .map_err(|message| ConfigError::Ini {
            path: path.to_path_buf(),
            message,
        })?;
    let mut sections = BTreeMap::new();
    for (section, keys) in map {
        if section == NO_SECTION {
            if let Some(key) = keys.into_keys().next() {
                return Err(ConfigError::OutsideSection {
                    path: path.to_path_buf(),
                    key,
                });
            }
            continue;
        }
        let keys = keys
            .into_iter()
            .map(|(key, value)| (key, RawValue::Ini(value.map(unquote))))
            .collect();
        sections.insert(section, keys);
    }
    Ok(RawDoc {
        path: path.to_path_buf(),
        sections,
    })
}

/// `"value"` or `'value'` → `value`.
fn unquote(value: String) -> String {
    let quoted = value.len() >= 2
        && ((value.starts_with('"') && value.ends_with('"'))
            || (value.starts_with('\'') && value.ends_with('\'')));
    if quoted {
        value[1..value.len() - 1].to_owned()
    } else {
        value
    }
}
