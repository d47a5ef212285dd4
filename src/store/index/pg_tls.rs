//! TLS to the PostgreSQL database (tokio-postgres-rustls, on the aws-lc-rs provider reqwest
//! already builds). What the connection string's `sslmode` means here:
//!
//! - `disable`: never TLS;
//! - `prefer` (the default, as libpq): TLS when the server offers it, else plaintext; the
//!   certificate is not verified (libpq does the same without a root certificate);
//! - `require`: TLS or no connection; the certificate is not verified;
//! - `verify-ca`: TLS, the certificate chain verified as for `verify-full`, the host name not
//!   checked (a server reached by an address its certificate does not name);
//! - `verify-full`: TLS, the certificate chain verified against `sslrootcert=FILE` (PEM) or,
//!   without it or with `sslrootcert=system`, the system's roots, and the host name checked.
//!
//! `sslcert=FILE` and `sslkey=FILE` (PEM; both or neither) give the client certificate a server
//! may ask for (`cert` authentication), in any mode that uses TLS. `allow` is refused rather
//! than silently strengthened. tokio-postgres parses none of `verify-ca`, `verify-full`,
//! `sslrootcert`, `sslcert`, `sslkey`: [`PgConfig`] takes them out of the string first. Unix
//! sockets never use TLS (the server refuses it there).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// `disable`, `prefer` or `require` (the last two: encrypted, not verified).
    Unverified,
    /// `verify-ca`: the chain against these roots, not the host name.
    VerifyCa(Roots),
    /// `verify-full`: the chain against these roots, and the host name.
    VerifyFull(Roots),
}

/// The certificate and key that prove the client's identity (`sslcert`, `sslkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where `verify-ca` and `verify-full` find their trusted roots.
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
    pub client_cert: Option<ClientCert>,
}

/// Why TLS to the database cannot be set up (never names the password).
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    #[error(
        "sslmode={0} is not supported: use disable, prefer, require, verify-ca or verify-full \
         (with sslrootcert=FILE or the system's roots)"
    )]
    Mode(String),
    #[error("sslrootcert is only used with sslmode=verify-ca or verify-full")]
    RootsWithoutVerify,
    #[error("sslcert and sslkey go together: {0} is missing")]
    HalfClientCert(&'static str),
    #[error("sslcert {cert} with sslkey {key}: {reason}")]
    ClientPair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// A file an option names (`sslrootcert`, `sslcert`, `sslkey`) cannot be used.
    #[error("{option} {path}: {reason}")]
    File {
        option: &'static str,
        path: PathBuf,
        reason: String,
    },
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
            client_cert: None,
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
        let (rest, ours) = take_tls_options(text);
        let mut pg: tokio_postgres::Config = rest.parse()?;
        let roots = || match ours.root.as_deref() {
            None | Some("system") => Roots::System,
            Some(file) => Roots::File(PathBuf::from(file)),
        };
        let tls = match ours.mode.as_deref() {
            Some("verify-full") => PgTls::VerifyFull(roots()),
            Some("verify-ca") => PgTls::VerifyCa(roots()),
            Some(other) => return Err(PgTlsError::Mode(other.into())),
            None if ours.root.is_some() => return Err(PgTlsError::RootsWithoutVerify),
            None => PgTls::Unverified,
        };
        if tls != PgTls::Unverified {
            pg.ssl_mode(SslMode::Require);
        }
        let client_cert = match (ours.cert, ours.key) {
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: cert.into(),
                key: key.into(),
            }),
            (Some(_), None) => return Err(PgTlsError::HalfClientCert("sslkey")),
            (None, Some(_)) => return Err(PgTlsError::HalfClientCert("sslcert")),
            (None, None) => None,
        };
        Ok(PgConfig {
            pg,
            tls,
            client_cert,
        })
    }
}

/// The TLS options of a connection string that tokio-postgres does not parse.
#[derive(Default)]
struct TlsOptions {
    /// An `sslmode` other than `disable`, `prefer`, `require`.
    mode: Option<String>,
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsOptions {
    /// Where `key=value` goes, if it is one of these options.
    fn slot(&mut self, key: &str, value: &str) -> Option<&mut Option<String>> {
        match key {
            "sslmode" if matches!(value, "disable" | "prefer" | "require") => None,
            "sslmode" => Some(&mut self.mode),
            "sslrootcert" => Some(&mut self.root),
            "sslcert" => Some(&mut self.cert),
            "sslkey" => Some(&mut self.key),
            _ => None,
        }
    }
}

/// `text` without the options tokio-postgres does not parse, and their values.
fn take_tls_options(text: &str) -> (String, TlsOptions) {
    let mut ours = TlsOptions::default();
    let mut keep = |key: &str, value: String| match ours.slot(key, &value) {
        Some(slot) => {
            *slot = Some(value);
            false
        }
        None => true,
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
    (rest, ours)
}

/// The connector for `config` (roots, certificate and key read now: a missing file is an
/// error before any connection).
pub fn connector(config: &PgConfig) -> Result<MakeRustlsConnect, PgTlsError> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| PgTlsError::Config(error.to_string()))?;
    let name_not_checked = |chain| NameNotChecked {
        chain,
        algorithms: provider.signature_verification_algorithms,
    };
    let builder = match &config.tls {
        PgTls::Unverified => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(name_not_checked(None))),
        PgTls::VerifyCa(roots) => {
            let chain = WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(roots)?),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|error| PgTlsError::Config(error.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(name_not_checked(Some(chain))))
        }
        PgTls::VerifyFull(roots) => builder.with_root_certificates(root_store(roots)?),
    };
    let tls = match &config.client_cert {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let (chain, key) = client_identity(client)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| PgTlsError::ClientPair {
                    cert: client.cert.clone(),
                    key: client.key.clone(),
                    reason: error.to_string(),
                })?
        }
    };
    Ok(MakeRustlsConnect::new(tls))
}

/// The certificate chain and private key of `client`, read from their PEM files.
fn client_identity(
    client: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PgTlsError> {
    let chain = crate::tls::pem_certificates(&client.cert)
        .map_err(|reason| unusable("sslcert", &client.cert, reason))?;
    let key = PrivateKeyDer::from_pem_file(&client.key)
        .map_err(|e| unusable("sslkey", &client.key, e.to_string()))?;
    Ok((chain, key))
}

fn unusable(option: &'static str, path: &Path, reason: String) -> PgTlsError {
    PgTlsError::File {
        option,
        path: path.to_path_buf(),
        reason,
    }
}

fn root_store(roots: &Roots) -> Result<RootCertStore, PgTlsError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let roots = crate::tls::pem_roots(path)
                .map_err(|reason| unusable("sslrootcert", path, reason))?;
            store.add_parsable_certificates(roots);
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
    let tls = connector(config)?;
    Ok(config.pg.connect(tls).await?)
}

/// The verifier of `prefer` and `require` (`chain` `None`: any certificate) and of `verify-ca`
/// (the chain as `verify-full` checks it; a certificate for another name passes: webpki checks
/// the name last, once the chain is verified). The handshake's signature is checked in both.
#[derive(Debug)]
struct NameNotChecked {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameNotChecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
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
        let chain = parse("postgresql://db.example/x?sslmode=verify-ca&sslrootcert=/ca.pem");
        assert_eq!(chain.tls, PgTls::VerifyCa(Roots::File("/ca.pem".into())));
        assert_eq!(chain.pg.get_ssl_mode(), SslMode::Require);
        let refused = "postgresql://db.example/x?sslmode=allow".parse::<PgConfig>();
        assert!(matches!(refused, Err(PgTlsError::Mode(_))));
        let stray = "postgresql://db.example/x?sslrootcert=/ca.pem".parse::<PgConfig>();
        assert!(matches!(stray, Err(PgTlsError::RootsWithoutVerify)));
    }

    #[test]
    fn a_client_certificate_is_read_from_urls_and_key_value_strings_as_a_pair() {
        let both = ClientCert {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
        };
        let url = parse("postgresql://db.example/x?sslmode=require&sslcert=/c.pem&sslkey=/k.pem");
        assert_eq!(url.client_cert.as_ref(), Some(&both));
        assert_eq!(url.pg.get_ssl_mode(), SslMode::Require);
        let kv = parse("host=db.example sslcert='/c.pem' sslkey=/k.pem dbname=x");
        assert_eq!(kv.client_cert, Some(both));
        assert_eq!(kv.pg.get_dbname(), Some("x"));
        assert_eq!(parse("host=db.example").client_cert, None);
        let half = "postgresql://db.example/x?sslcert=/c.pem".parse::<PgConfig>();
        assert!(matches!(half, Err(PgTlsError::HalfClientCert("sslkey"))));
        let half = "host=db.example sslkey=/k.pem".parse::<PgConfig>();
        assert!(matches!(half, Err(PgTlsError::HalfClientCert("sslcert"))));
    }

    #[test]
    fn a_missing_root_or_client_file_is_an_error_naming_it() {
        let missing = |text: &str| {
            let config: PgConfig = text.parse().unwrap();
            connector(&config).err().unwrap().to_string()
        };
        let error = missing("host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem");
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        let error = missing("host=db sslmode=verify-ca sslrootcert=/nonexistent/ca.pem");
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        let error = missing("host=db sslcert=/nonexistent/c.pem sslkey=/nonexistent/k.pem");
        assert!(
            error.contains("sslcert") && error.contains("/nonexistent/c.pem"),
            "{error}"
        );
    }
}
