//! Finding and reading the config file.
//!
//! Discovery: `--config PATH` (or `$CLAUDEDL_CONFIG`), else `./claudedl.toml`, else
//! `$XDG_CONFIG_HOME/claudedl/config.toml` (`~/.config/claudedl/config.toml` when
//! `XDG_CONFIG_HOME` is unset). A named file must exist; the others are optional.
//!
//! Format: a name ending in `.ini`, `.conf` or `.cfg` is read as INI (the original design's
//! format: `key = value`, `#`/`;` comments, also after a value). Anything else is TOML; a file
//! that is not valid TOML but reads cleanly as INI is taken as INI (with a note saying so), so
//! an original-design file renamed to `claudedl.toml` keeps working. When it reads as neither,
//! the TOML error is reported.

use std::path::{Path, PathBuf};

use super::schema::{self, Layer, RawDoc};
use super::{ConfigError, ini};

/// The file looked for in the current directory.
pub const LOCAL_NAME: &str = "claudedl.toml";

/// How a config file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Ini,
}

/// A config file, read and checked.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub format: Format,
    pub layer: Layer,
    /// Things the user should fix (e.g. a key in a file others can read).
    pub warnings: Vec<String>,
    /// Things worth a log line (e.g. an INI file read after TOML failed).
    pub notes: Vec<String>,
}

/// The config file to read, if any: `explicit`, else the first candidate that exists.
/// `var` looks up environment variables.
pub fn locate(explicit: Option<&Path>, var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    let config_home = var("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".config")));
    let mut candidates = vec![PathBuf::from(LOCAL_NAME)];
    candidates.extend(config_home.map(|dir| dir.join("claudedl").join("config.toml")));
    candidates.into_iter().find(|path| path.is_file())
}

/// Read and check the file at `path` (reported by its absolute path).
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (format, layer, notes) = parse(path, &text)?;
    let warnings = key_permission_warning(path, &layer).into_iter().collect();
    Ok(ConfigFile {
        path: path.to_path_buf(),
        format,
        layer,
        warnings,
        notes,
    })
}

fn parse(path: &Path, text: &str) -> Result<(Format, Layer, Vec<String>), ConfigError> {
    if is_ini_name(path) {
        return Ok((Format::Ini, read_ini(path, text)?, Vec::new()));
    }
    let toml_error = match text.parse::<toml::Table>() {
        Ok(table) => {
            let doc = RawDoc::from_toml(path, table)?;
            return Ok((Format::Toml, schema::read(&doc)?, Vec::new()));
        }
        Err(error) => error,
    };
    match read_ini(path, text) {
        Ok(layer) => {
            let first_line = toml_error.to_string();
            let first_line = first_line.lines().next().unwrap_or_default();
            let note = format!(
                "{} is not TOML ({first_line}); read it as INI",
                path.display()
            );
            Ok((Format::Ini, layer, vec![note]))
        }
        Err(_) => Err(ConfigError::Toml {
            path: path.to_path_buf(),
            message: toml_error.to_string().trim_end().to_owned(),
        }),
    }
}

fn read_ini(path: &Path, text: &str) -> Result<Layer, ConfigError> {
    schema::read(&ini::parse(path, text)?)
}

fn is_ini_name(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    matches!(ext.to_ascii_lowercase().as_str(), "ini" | "conf" | "cfg")
}

/// A file holding the API key should be readable by its owner only.
#[cfg(unix)]
fn key_permission_warning(path: &Path, layer: &Layer) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    layer.api_key.as_ref()?;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} holds the API key and is readable by group or others (mode {:03o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(not(unix))]
fn key_permission_warning(_path: &Path, _layer: &Layer) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ini_name_is_read_as_ini_and_other_names_fall_back_to_it() {
        let ini = "[network]\ntimeout = 30  # seconds\n[storage]\nbase_dir = ./data\n";
        let (format, layer, notes) = parse(Path::new("a.conf"), ini).unwrap();
        assert_eq!((format, notes.len()), (Format::Ini, 0));
        assert_eq!(layer.read_timeout, Some(30.0));
        let (format, layer, notes) = parse(Path::new("claudedl.toml"), ini).unwrap();
        assert_eq!((format, notes.len()), (Format::Ini, 1));
        assert_eq!(layer.data_dir, Some(PathBuf::from("./data")));
    }

    #[test]
    fn invalid_toml_that_is_no_ini_either_reports_the_toml_error() {
        let error = parse(Path::new("c.toml"), "[network]\nmax_retries = [1,\n").unwrap_err();
        assert!(matches!(error, ConfigError::Toml { .. }), "{error}");
    }

    #[test]
    fn discovery_prefers_xdg_config_home_over_home() {
        let dir = tempfile::tempdir().unwrap();
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(xdg.join("claudedl")).unwrap();
        std::fs::write(xdg.join("claudedl/config.toml"), "").unwrap();
        let xdg_text = xdg.to_str().unwrap().to_owned();
        let var = |name: &str| (name == "XDG_CONFIG_HOME").then(|| xdg_text.clone());
        assert_eq!(locate(None, var), Some(xdg.join("claudedl/config.toml")));
        let explicit = Path::new("/nonexistent.toml");
        assert_eq!(locate(Some(explicit), |_| None), Some(explicit.into()));
    }
}
