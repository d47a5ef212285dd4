//! TLS to the PostgreSQL database (tokio-postgres-rustls, on the aws-lc-rs provider reqwest
//! already builds). What the connection string's `sslmode` means here:
//!
//! - `disable`: never TLS;
//! - `prefer` (the default, as libpq): TLS when the server offers it, else plaintext; the
//!   certificate is not verified (libpq does the same without a root certificate);
//! - `require`: TLS or no connection; the certificate is not verified;
//! - `verify-full`: TLS, the certificate chain verified against `sslrootcert=FILE` (PEM) or,
//!   without it or with `sslrootcert=system`, the system's roots, and the host name checked.
//!
//! `verify-ca` (a chain without the name) is refused rather than silently weakened or
//! strengthened. tokio-postgres parses neither `verify-full` nor `sslrootcert`: [`PgConfig`]
//! takes them out of the string first. Unix sockets never use TLS (the server refuses it there).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// `disable`, `prefer` or `require` (the last two: encrypted, not verified).
    Unverified,
    /// `verify-full`: the chain against these roots, and the host name.
    VerifyFull(Roots),
}

/// Where `verify-full` finds its trusted roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's store.
    System,
    /// A PEM file (`sslrootcert=FILE`).
    File(PathBuf),
}

/// Connection settings: tokio-postgres's, and how TLS verifies the server.
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub pg: tokio_postgres::Config,
    pub tls: PgTls,
}

/// Why TLS to the database cannot be set up (never names the password).
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    #[error(
        "sslmode={0} is not supported: use disable, prefer, require or verify-full (with \
         sslrootcert=FILE or the system's roots)"
    )]
    Mode(String),
    #[error("sslrootcert is only used with sslmode=verify-full")]
    RootsWithoutVerify,
    #[error("sslrootcert {path}: {reason}")]
    RootFile { path: PathBuf, reason: String },
    #[error("the system's root certificates: {0}")]
    SystemRoots(String),
    #[error("the TLS configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Parse(#[from] tokio_postgres::Error),
}

impl From<tokio_postgres::Config> for PgConfig {
    fn from(pg: tokio_postgres::Config) -> PgConfig {
        PgConfig {
            pg,
            tls: PgTls::Unverified,
        }
    }
}

impl From<&tokio_postgres::Config> for PgConfig {
    fn from(pg: &tokio_postgres::Config) -> PgConfig {
        PgConfig::from(pg.clone())
    }
}

impl FromStr for PgConfig {
    type Err = PgTlsError;

    /// A URL (`postgresql://…?sslmode=verify-full&sslrootcert=/ca.pem`) or a key=value string.
    fn from_str(text: &str) -> Result<PgConfig, PgTlsError> {
        let (rest, mode, root) = take_tls_options(text);
        let mut pg: tokio_postgres::Config = rest.parse()?;
        let tls = match (mode.as_deref(), root) {
            (Some("verify-full"), root) => {
                pg.ssl_mode(SslMode::Require);
                PgTls::VerifyFull(match root.as_deref() {
                    None | Some("system") => Roots::System,
                    Some(file) => Roots::File(PathBuf::from(file)),
                })
            }
            (Some(other @ ("verify-ca" | "allow")), _) => {
                return Err(PgTlsError::Mode(other.into()));
            }
            (_, Some(_)) => return Err(PgTlsError::RootsWithoutVerify),
            (_, None) => PgTls::Unverified,
        };
        Ok(PgConfig { pg, tls })
    }
}

/// `text` without its `sslrootcert` and any `sslmode` tokio-postgres does not parse, and their
/// values.
fn take_tls_options(text: &str) -> (String, Option<String>, Option<String>) {
    let ours = |key: &str, value: &str| {
        key == "sslrootcert"
            || (key == "sslmode" && !matches!(value, "disable" | "prefer" | "require"))
    };
    let (mut mode, mut root) = (None, None);
    let mut keep = |key: &str, value: String| {
        if !ours(key, &value) {
            return true;
        }
        *(if key == "sslmode" {
            &mut mode
        } else {
            &mut root
        }) = Some(value);
        false
    };
    let url = text.starts_with("postgres://") || text.starts_with("postgresql://");
    let rest = if url {
        match text.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        let value = percent_encoding::percent_decode_str(value)
                            .decode_utf8_lossy()
                            .into_owned();
                        keep(key, value)
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => text.to_owned(),
        }
    } else {
        let kept: Vec<&str> = text
            .split_whitespace()
            .filter(|token| {
                let (key, value) = token.split_once('=').unwrap_or((token, ""));
                keep(key.trim(), value.trim_matches('\'').to_owned())
            })
            .collect();
        kept.join(" ")
    };
    (rest, mode, root)
}

/// The connector for `tls` (roots read now: a missing file is an error before any connection).
pub fn connector(tls: &PgTls) -> Result<MakeRustlsConnect, PgTlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| PgTlsError::Config(error.to_string()))?;
    let config = match tls {
        PgTls::Unverified => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
        PgTls::VerifyFull(roots) => builder
            .with_root_certificates(root_store(roots)?)
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn root_store(roots: &Roots) -> Result<RootCertStore, PgTlsError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let bad = |reason: String| PgTlsError::RootFile {
                path: path.clone(),
                reason,
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                store.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            if store.is_empty() {
                return Err(bad("no certificate in it".into()));
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(PgTlsError::SystemRoots(format!(
                    "none found {}",
                    errors.join("; ")
                )));
            }
        }
    }
    Ok(store)
}

/// The driver's connection over a socket that may be TLS.
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// One connection to `config`'s database, TLS as its `sslmode` says.
pub async fn connect(
    config: &PgConfig,
) -> Result<(tokio_postgres::Client, Connection), super::BoxError> {
    let tls = connector(&config.tls)?;
    Ok(config.pg.connect(tls).await?)
}

/// `prefer` and `require`: any certificate, its handshake signature still checked.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PgConfig {
        text.parse().unwrap()
    }

    #[test]
    fn sslmode_and_sslrootcert_are_read_from_urls_and_key_value_strings() {
        let full =
            parse("postgresql://u:pw@db.example/x?sslmode=verify-full&sslrootcert=%2Fca.pem");
        assert_eq!(full.tls, PgTls::VerifyFull(Roots::File("/ca.pem".into())));
        assert_eq!(full.pg.get_ssl_mode(), SslMode::Require);
        assert_eq!(full.pg.get_dbname(), Some("x"));
        assert_eq!(full.pg.get_password(), Some(&b"pw"[..]));
        let system = parse("host=db.example dbname=x sslmode=verify-full");
        assert_eq!(system.tls, PgTls::VerifyFull(Roots::System));
        let kv = parse("host=db.example sslmode=verify-full sslrootcert=/ca.pem dbname=x");
        assert_eq!(kv.tls, PgTls::VerifyFull(Roots::File("/ca.pem".into())));
        assert_eq!(kv.pg.get_dbname(), Some("x"));
        let require = parse("postgresql://db.example/x?sslmode=require");
        assert_eq!(
            (require.tls, require.pg.get_ssl_mode()),
            (PgTls::Unverified, SslMode::Require)
        );
        assert_eq!(
            parse("postgresql://db.example/x").pg.get_ssl_mode(),
            SslMode::Prefer
        );
        let refused = "postgresql://db.example/x?sslmode=verify-ca".parse::<PgConfig>();
        assert!(matches!(refused, Err(PgTlsError::Mode(_))));
        let stray = "postgresql://db.example/x?sslrootcert=/ca.pem".parse::<PgConfig>();
        assert!(matches!(stray, Err(PgTlsError::RootsWithoutVerify)));
    }

    #[test]
    fn a_missing_root_file_is_an_error_naming_it() {
        let error = connector(&PgTls::VerifyFull(Roots::File(
            "/nonexistent/ca.pem".into(),
        )))
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
