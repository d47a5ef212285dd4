//! The fleet's PostgreSQL database: `--db` or `$CLAUDEDL_DB`, a URL
//! (`postgresql://user@host/db`) or a key=value string (`host=/run/pg dbname=claudedl`). The
//! password comes from the URL or from `$PGPASSWORD` (as libpq reads it); neither is ever shown:
//! [`Database::redacted`] is the form for messages, logs and `config show`.

use super::Secret;
use crate::store::index::pg_tls::{PgConfig, PgTlsError};

/// The environment variable holding the database URL.
pub const DB_VAR: &str = "CLAUDEDL_DB";
/// The environment variable holding the password when the URL has none (libpq's).
pub const PASSWORD_VAR: &str = "PGPASSWORD";

/// A database to connect to, its secrets kept out of `Debug`.
#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    url: Secret,
    password: Option<Secret>,
}

/// Why `--db` cannot be used (the URL itself is never repeated: it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("the database URL (--db or ${DB_VAR}, {redacted}) is invalid: {reason}")]
pub struct DatabaseError {
    redacted: String,
    reason: String,
}

impl Database {
    /// `url` as given; `password` from the environment, used when the URL has none.
    pub fn new(url: Secret, password: Option<Secret>) -> Database {
        Database { url, password }
    }

    /// The connection settings, the password applied, TLS as `sslmode` says (see
    /// [`crate::store::index::pg_tls`]).
    pub fn pg_config(&self) -> Result<PgConfig, DatabaseError> {
        let mut config: PgConfig =
            self.url
                .expose()
                .parse()
                .map_err(|error: PgTlsError| DatabaseError {
                    redacted: format!("{} chars", self.url.expose().chars().count()),
                    // The parser's messages name what is wrong, never the password's value.
                    reason: error.to_string(),
                })?;
        if config.pg.get_password().is_none()
            && let Some(password) = &self.password
        {
            config.pg.password(password.expose());
        }
        if config.pg.get_hosts().is_empty() {
            config.pg.host("localhost");
        }
        Ok(config)
    }

    /// `postgresql://user@host:port/dbname` without the password (a Unix socket directory goes
    /// in `?host=`); what the URL cannot be parsed into says so.
    pub fn redacted(&self) -> String {
        match self.pg_config() {
            Ok(config) => redacted(&config.pg),
            Err(_) => format!("<invalid, {} chars>", self.url.expose().chars().count()),
        }
    }
}

/// `config` as a URL without its password.
pub fn redacted(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or_default();
    let port = config
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    match config.get_hosts().first() {
        Some(Host::Unix(dir)) => {
            format!("postgresql://{user}{port}/{dbname}?host={}", dir.display())
        }
        Some(Host::Tcp(host)) => format!("postgresql://{user}{host}{port}/{dbname}"),
        None => format!("postgresql://{user}{port}/{dbname}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(url: &str, password: Option<&str>) -> Database {
        Database::new(Secret::new(url), password.map(Secret::new))
    }

    #[test]
    fn the_password_comes_from_the_url_else_the_environment_and_is_never_shown() {
        let with = db(
            "postgresql://fleet:hunter2@db.example:6543/claudedl",
            Some("envpw"),
        );
        assert_eq!(
            with.pg_config().unwrap().pg.get_password(),
            Some(&b"hunter2"[..])
        );
        assert_eq!(
            with.redacted(),
            "postgresql://fleet@db.example:6543/claudedl"
        );
        assert!(!format!("{with:?}").contains("hunter2"));
        let without = db("postgresql://fleet@db.example/claudedl", Some("envpw"));
        assert_eq!(
            without.pg_config().unwrap().pg.get_password(),
            Some(&b"envpw"[..])
        );
        let socket = db(
            "host=/run/pg port=5432 user=postgres dbname=x password=pw",
            None,
        );
        assert_eq!(
            socket.redacted(),
            "postgresql://postgres@:5432/x?host=/run/pg"
        );
    }

    #[test]
    fn an_invalid_url_is_refused_without_repeating_it() {
        let bad = db("postgresql://fleet:hunter2@db.example:notaport/x", None);
        let error = bad.pg_config().unwrap_err().to_string();
        assert!(
            error.contains("invalid") && !error.contains("hunter2"),
            "{error}"
        );
        assert!(!bad.redacted().contains("hunter2"));
    }
}
