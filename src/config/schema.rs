//! What a config file may hold, and reading it into a [`Layer`].
//!
//! ```toml
//! [auth]      # api_key = "sk-ant-…" | api_key_env = "NAME"
//! [network]   # preset, base_url, connect_timeout, read_timeout, timeout, max_retries,
//!             # connections, max_connections, requests_per_minute, endpoints,
//!             # overload_pause, limit_rate, cacert, proxy, transfer_http
//! [storage]   # base_dir, chunk_size
//! [crypt]     # recipients = ["age1…"], recipients_file
//! [log]       # format = "text" | "json", file, level
//! ```
//!
//! `timeout` (the original design's single timeout) sets both `connect_timeout` and
//! `read_timeout`; either of those, when also given, wins over it. Sizes are a number of bytes
//! or a string such as `"64MiB"`; durations are seconds. In INI files a list is
//! comma-separated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytesize::ByteSize;

use super::{ConfigError, LogFormat, LogLevel, Preset, Secret, TransferHttp};

/// Every section and its keys.
pub const SCHEMA: &[(&str, &[&str])] = &[
    ("auth", &["api_key", "api_key_env"]),
    (
        "network",
        &[
            "preset",
            "base_url",
            "connect_timeout",
            "read_timeout",
            "timeout",
            "max_retries",
            "connections",
            "max_connections",
            "requests_per_minute",
            "endpoints",
            "overload_pause",
            "limit_rate",
            "cacert",
            "proxy",
            "transfer_http",
        ],
    ),
    ("storage", &["base_dir", "chunk_size"]),
    ("crypt", &["recipients", "recipients_file"]),
    ("log", &["format", "file", "level"]),
];

/// One layer of settings (the command line's, the environment's or a file's): `None` where the
/// layer says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    pub api_key: Option<Secret>,
    pub api_key_env: Option<String>,
    pub preset: Option<Preset>,
    pub base_url: Option<String>,
    pub connect_timeout: Option<f64>,
    pub read_timeout: Option<f64>,
    pub max_retries: Option<u32>,
    pub connections: Option<u16>,
    pub max_connections: Option<u16>,
    pub requests_per_minute: Option<u32>,
    pub endpoints: Option<Vec<String>>,
    pub overload_pause: Option<f64>,
    pub limit_rate: Option<ByteSize>,
    /// A PEM file of extra trusted CA certificates.
    pub cacert: Option<PathBuf>,
    /// Command line only: accept any certificate.
    pub insecure: Option<bool>,
    pub proxy: Option<String>,
    pub transfer_http: Option<TransferHttp>,
    pub data_dir: Option<PathBuf>,
    pub chunk_size: Option<ByteSize>,
    /// Command line only (hidden tuning flags; no file key).
    pub min_split_size: Option<ByteSize>,
    pub checkpoint_ms: Option<u64>,
    pub crypt_recipients: Option<Vec<String>>,
    pub crypt_recipients_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_file: Option<PathBuf>,
    pub log_level: Option<LogLevel>,
    /// Command line only: the fleet's database URL (`--db`; it may hold a password).
    pub db: Option<Secret>,
}

/// A value as the file spelled it: typed (TOML) or text (INI; `None` for a bare key).
#[derive(Debug, Clone)]
pub enum RawValue {
    Toml(toml::Value),
    Ini(Option<String>),
}

/// A parsed file: sections of keys, before checking.
#[derive(Debug, Clone)]
pub struct RawDoc {
    pub path: PathBuf,
    pub sections: BTreeMap<String, BTreeMap<String, RawValue>>,
}

impl RawDoc {
    pub fn from_toml(path: &Path, table: toml::Table) -> Result<RawDoc, ConfigError> {
        let mut sections = BTreeMap::new();
        for (name, value) in table {
            let toml::Value::Table(keys) = value else {
                return Err(ConfigError::OutsideSection {
                    path: path.to_path_buf(),
                    key: name,
                });
            };
            let keys = keys
                .into_iter()
                .map(|(k, v)| (k, RawValue::Toml(v)))
                .collect();
            sections.insert(name, keys);
        }
        Ok(RawDoc {
            path: path.to_path_buf(),
            sections,
        })
    }
}

/// Check `doc` against [`SCHEMA`] and read it.
pub fn read(doc: &RawDoc) -> Result<Layer, ConfigError> {
    check_names(doc)?;
    let auth = Section::new(doc, "auth");
    let net = Section::new(doc, "network");
    let timeout = net.seconds("timeout")?;
    let layer = Layer {
        api_key: auth.get::<String>("api_key")?.map(Secret::new),
        api_key_env: auth.get("api_key_env")?,
        preset: net.get("preset")?,
        base_url: net.url("base_url")?,
        connect_timeout: net.seconds("connect_timeout")?.or(timeout),
        read_timeout: net.seconds("read_timeout")?.or(timeout),
        max_retries: net.get("max_retries")?,
        connections: net.in_range("connections", 1, 256)?,
        max_connections: net.in_range("max_connections", 1, 1024)?,
        requests_per_minute: net.in_range("requests_per_minute", 1, 1_000_000)?,
        endpoints: net.urls("endpoints")?,
        overload_pause: net.seconds("overload_pause")?,
        limit_rate: net.get("limit_rate")?,
        cacert: net.get("cacert")?,
        insecure: None,
        db: None,
        proxy: net.checked(
            "proxy",
            "a proxy URL (http, https, socks5, socks5h)",
            |u: &String| super::network::proxy_url(u).is_ok(),
        )?,
        transfer_http: net.get("transfer_http")?,
        data_dir: Section::new(doc, "storage").get("base_dir")?,
        chunk_size: Section::new(doc, "storage").get("chunk_size")?,
        min_split_size: None,
        checkpoint_ms: None,
        crypt_recipients: Section::new(doc, "crypt").recipients("recipients")?,
        crypt_recipients_file: Section::new(doc, "crypt").get("recipients_file")?,
        log_format: Section::new(doc, "log").get("format")?,
        log_file: Section::new(doc, "log").get("file")?,
        log_level: Section::new(doc, "log").get("level")?,
    };
    if layer.api_key.is_some() && layer.api_key_env.is_some() {
        return Err(ConfigError::Conflict {
            path: doc.path.clone(),
            section: "auth",
            first: "api_key",
            second: "api_key_env",
        });
    }
    Ok(layer)
}

/// Every section and key must be in [`SCHEMA`].
fn check_names(doc: &RawDoc) -> Result<(), ConfigError> {
    for (section, keys) in &doc.sections {
        let Some((_, known)) = SCHEMA.iter().find(|(name, _)| name == section) else {
            let known = SCHEMA.iter().map(|(name, _)| format!("[{name}]"));
            return Err(ConfigError::UnknownSection {
                path: doc.path.clone(),
                section: section.clone(),
                known: known.collect::<Vec<_>>().join(", "),
            });
        };
        if let Some(key) = keys.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(ConfigError::UnknownKey {
                path: doc.path.clone(),
                section: section.clone(),
                key: key.clone(),
                known: known.join(", "),
            });
        }
    }
    Ok(())
}

/// The keys of one section, read by type.
struct Section<'a> {
    doc: &'a RawDoc,
    name: &'static str,
}

impl<'a> Section<'a> {
    fn new(doc: &'a RawDoc, name: &'static str) -> Section<'a> {
        Section { doc, name }
    }

    fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.doc.sections.get(self.name)?.get(key)
    }

    fn invalid(&self, key: &str, expected: &str, raw: &RawValue) -> ConfigError {
        let found = match raw {
            RawValue::Toml(value) => format!("{} {value}", value.type_str()),
            RawValue::Ini(Some(text)) => format!("{text:?}"),
            RawValue::Ini(None) => "no value".to_owned(),
        };
        ConfigError::Invalid {
            path: self.doc.path.clone(),
            section: self.name.to_owned(),
            key: key.to_owned(),
            expected: expected.to_owned(),
            found,
        }
    }

    fn get<T: FromRaw>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        let value = match raw {
            RawValue::Toml(value) => T::from_toml(value),
            RawValue::Ini(text) => text.as_deref().and_then(T::from_text),
        };
        value
            .map(Some)
            .ok_or_else(|| self.invalid(key, &T::expected(), raw))
    }

    /// A value that must pass `check`, described by `expected`.
    fn checked<T: FromRaw>(
        &self,
        key: &str,
        expected: &str,
        check: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, ConfigError> {
        match self.get::<T>(key)? {
            Some(value) if !check(&value) => {
                Err(self.invalid(key, expected, self.raw(key).expect("it was read")))
            }
            value => Ok(value),
        }
    }

    fn seconds(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        self.checked(key, "a positive number of seconds", |s: &f64| {
            super::network::valid_seconds(*s)
        })
    }

    fn in_range<T>(&self, key: &str, min: u32, max: u32) -> Result<Option<T>, ConfigError>
    where
        T: FromRaw + Copy + Into<u32>,
    {
        let expected = format!("an integer from {min} to {max}");
        self.checked(key, &expected, |n: &T| (min..=max).contains(&(*n).into()))
    }

    fn url(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.checked(key, "an http(s) URL", |u: &String| is_http_url(u))
    }

    fn urls(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        self.checked(key, "a list of http(s) URLs", |urls: &Vec<String>| {
            urls.iter().all(|u| is_http_url(u))
        })
    }

    fn recipients(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let expected = "a list of recipients (age1… or ssh-… public keys)";
        self.checked(key, expected, |keys: &Vec<String>| {
            keys.iter()
                .all(|k| k.starts_with("age1") || k.starts_with("ssh-"))
        })
    }
}

fn is_http_url(text: &str) -> bool {
    super::http_url(text).is_ok()
}

/// A type a key can hold, from TOML or from INI text (`None`: not this type).
trait FromRaw: Sized {
    fn expected() -> String;
    fn from_toml(value: &toml::Value) -> Option<Self>;
    fn from_text(text: &str) -> Option<Self>;
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl FromRaw for $t {
            fn expected() -> String {
                "an integer".into()
            }
            fn from_toml(value: &toml::Value) -> Option<Self> {
                value.as_integer().and_then(|n| n.try_into().ok())
            }
            fn from_text(text: &str) -> Option<Self> {
                text.parse().ok()
            }
        }
    )*};
}
integer!(u16, u32);

impl FromRaw for f64 {
    fn expected() -> String {
        "a number".into()
    }
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value
            .as_float()
            .or_else(|| value.as_integer().map(|n| n as f64))
    }
    fn from_text(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl FromRaw for ByteSize {
    fn expected() -> String {
        "a size: a number of bytes or a string such as \"64MiB\"".into()
    }
    fn from_toml(value: &toml::Value) -> Option<Self> {
        match value {
            toml::Value::Integer(n) => u64::try_from(*n).ok().map(ByteSize),
            toml::Value::String(text) => Self::from_text(text),
            _ => None,
        }
    }
    fn from_text(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl FromRaw for String {
    fn expected() -> String {
        "a string".into()
    }
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().map(str::to_owned)
    }
    fn from_text(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
}

impl FromRaw for PathBuf {
    fn expected() -> String {
        "a path (a string)".into()
    }
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().filter(|s| !s.is_empty()).map(PathBuf::from)
    }
    fn from_text(text: &str) -> Option<Self> {
        Some(PathBuf::from(text)).filter(|p| !p.as_os_str().is_empty())
    }
}

impl FromRaw for Vec<String> {
    fn expected() -> String {
        "a list of strings".into()
    }
    fn from_toml(value: &toml::Value) -> Option<Self> {
        let items = value
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned));
        items.collect()
    }
    fn from_text(text: &str) -> Option<Self> {
        let items = text.split(',').map(str::trim).filter(|s| !s.is_empty());
        Some(items.map(str::to_owned).collect())
    }
}

/// Named values: a string that parses.
trait Named: FromStr {
    const NAMES: &'static str;
}
impl Named for Preset {
    const NAMES: &'static str = Preset::NAMES;
}
impl Named for LogFormat {
    const NAMES: &'static str = LogFormat::NAMES;
}
impl Named for LogLevel {
    const NAMES: &'static str = LogLevel::NAMES;
}
impl Named for TransferHttp {
    const NAMES: &'static str = TransferHttp::NAMES;
}

impl<T: Named> FromRaw for T {
    fn expected() -> String {
        T::NAMES.into()
    }
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_str().and_then(Self::from_text)
    }
    fn from_text(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> Result<Layer, ConfigError> {
        let table = text.parse::<toml::Table>().unwrap();
        read(&RawDoc::from_toml(Path::new("/x/claudedl.toml"), table)?)
    }

    #[test]
    fn every_key_of_the_schema_is_read() {
        let layer = toml(
            r#"
            [auth]
            api_key = "k"
            [network]
            preset = "cloud"
            base_url = "http://localhost:1"
            connect_timeout = 5
            read_timeout = 7.5
            timeout = 1
            max_retries = 2
            connections = 3
            max_connections = 4
            requests_per_minute = 600
            endpoints = ["http://backup:1"]
            overload_pause = 9
            limit_rate = "5MiB"
            [storage]
            base_dir = "d"
            chunk_size = 1048576
            [crypt]
            recipients = ["age1abc"]
            recipients_file = "r.txt"
            [log]
            format = "json"
            file = "l.log"
            level = "debug"
            "#,
        )
        .unwrap();
        assert_eq!(layer.api_key, Some(Secret::new("k")));
        assert_eq!(
            (layer.connect_timeout, layer.read_timeout),
            (Some(5.0), Some(7.5))
        );
        assert_eq!(layer.limit_rate, Some(ByteSize::mib(5)));
        assert_eq!(layer.chunk_size, Some(ByteSize::mib(1)));
        assert_eq!(layer.log_level, Some(LogLevel::Debug));
        assert_eq!(layer.crypt_recipients, Some(vec!["age1abc".to_owned()]));
        let keys: usize = SCHEMA.iter().map(|(_, keys)| keys.len()).sum();
        assert_eq!(
            keys, 24,
            "a line above per key (api_key_env excludes api_key)"
        );
    }

    #[test]
    fn errors_name_the_key_the_section_and_the_file() {
        let error = toml("[network]\nconect_timeout = 3\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("`conect_timeout`"), "{error}");
        assert!(
            error.contains("[network]") && error.contains("/x/claudedl.toml"),
            "{error}"
        );
        let error = toml("[netwrk]\n").unwrap_err().to_string();
        assert!(error.contains("[netwrk]"), "{error}");
        let error = toml("[network]\nmax_retries = \"five\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("max_retries: expected an integer"),
            "{error}"
        );
        let error = toml("[network]\nconnections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("from 1 to 256"), "{error}");
        let error = toml("rpm = 5\n").unwrap_err().to_string();
        assert!(error.contains("outside any section"), "{error}");
        let error = toml("[auth]\napi_key = \"a\"\napi_key_env = \"B\"\n").unwrap_err();
        assert!(matches!(error, ConfigError::Conflict { .. }));
    }

    #[test]
    fn the_single_timeout_sets_both_unless_one_is_given() {
        let layer = toml("[network]\ntimeout = 30\nconnect_timeout = 5\n").unwrap();
        assert_eq!(
            (layer.connect_timeout, layer.read_timeout),
            (Some(5.0), Some(30.0))
        );
    }

    #[test]
    fn ini_values_are_typed_by_key_and_comments_after_values_are_dropped() {
        let text = "# original design\n[auth]\napi_key = sk-test  # never commit\n\
                    [network]\ntimeout = 30  # seconds\nmax_retries = 5 ; retries\n\
                    endpoints = http://a:1, http://b:2\n\
                    [storage]\nbase_dir = ./data\nchunk_size = 10485760\n";
        let layer = read(&crate::config::ini::parse(Path::new("c.ini"), text).unwrap()).unwrap();
        assert_eq!(layer.api_key, Some(Secret::new("sk-test")));
        assert_eq!(layer.read_timeout, Some(30.0));
        assert_eq!(layer.max_retries, Some(5));
        assert_eq!(layer.endpoints.unwrap().len(), 2);
        assert_eq!(layer.chunk_size, Some(ByteSize(10_485_760)));
        let error = read(
            &crate::config::ini::parse(Path::new("c.ini"), "[network]\nmax_retries = x\n").unwrap(),
        );
        assert!(error.unwrap_err().to_string().contains("found \"x\""));
    }
}
