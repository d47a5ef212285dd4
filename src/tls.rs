//! TLS pieces the HTTP clients ([`crate::http::tls`]) and the fleet's database connection
//! ([`crate::store::index::pg_tls`]) share: the crypto provider, and certificates read from PEM
//! files.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The crypto provider of every TLS connection: aws-lc-rs, the one reqwest already builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of the PEM file `path` (at least one); the reason it has none otherwise.
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())?;
    if certificates.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certificates)
}

/// The certificates of the PEM file `path`, each usable as a trusted root.
pub fn pem_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let roots = pem_certificates(path)?;
    for root in &roots {
        rustls::RootCertStore::empty()
            .add(root.clone())
            .map_err(|e| e.to_string())?;
    }
    Ok(roots)
}
