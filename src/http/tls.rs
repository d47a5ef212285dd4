//! TLS for the HTTP clients: rustls with the platform's verifier (the system's CA
//! roots, and those of `--cacert`), the verifier made at the first TLS handshake rather than
//! when the client is built (reqwest's way). Reading the system's roots would cost every start
//! a few milliseconds (~5 ms here: docs/benchmarks-small.md, session 11), and where there are
//! none (a minimal container) no client could be built at all, not even for plain-HTTP
//! downloads or the demo's loopback mock. This way plain HTTP works there, and an HTTPS
//! connection fails as a rejected certificate that says what to do.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_platform_verifier::Verifier;

/// A client's TLS configuration: servers verified against the system's roots and
/// `extra_roots`; ALPN offers HTTP/2 only when `http2`.
pub fn client_config(extra_roots: &[CertificateDer<'static>], http2: bool) -> rustls::ClientConfig {
    let provider = crate::tls::provider();
    let verifier = LazyVerifier {
        extra_roots: extra_roots.to_vec(),
        provider: Arc::clone(&provider),
        built: OnceLock::new(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs offers TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config
}

/// The platform's verifier, made when the first server is verified. Made on the runtime thread
/// of that handshake (reading the roots blocks it once, for milliseconds); any other handshake
/// meanwhile waits for it.
#[derive(Debug)]
struct LazyVerifier {
    extra_roots: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    built: OnceLock<Result<Verifier, rustls::Error>>,
}

impl LazyVerifier {
    fn verifier(&self) -> Result<&Verifier, rustls::Error> {
        let built = self.built.get_or_init(|| {
            let roots = self.extra_roots.iter().cloned();
            Verifier::new_with_extra_roots(roots, Arc::clone(&self.provider)).map_err(no_roots)
        });
        built.as_ref().map_err(Clone::clone)
    }
}

/// The platform verifier's refusal to be made (it found no root): a rejected certificate, with
/// what to do.
fn no_roots(error: rustls::Error) -> rustls::Error {
    let reason = NoRoots(format!(
        "no CA certificate to verify it with ({error}): install the system's CA certificates \
         (ca-certificates), point SSL_CERT_FILE at a PEM bundle, or pass --cacert FILE"
    ));
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
}

/// Printed in the error chain through rustls's `Debug` of [`CertificateError::Other`]: the
/// text alone, as its `Display`.
#[derive(thiserror::Error)]
#[error("{0}")]
struct NoRoots(String);

impl std::fmt::Debug for NoRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    /// The provider's schemes, as the platform's verifier offers: known without its roots.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_offers_http2_only_when_asked() {
        assert_eq!(client_config(&[], false).alpn_protocols, [b"http/1.1"]);
        assert_eq!(
            client_config(&[], true).alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn no_roots_is_a_rejected_certificate_that_says_what_to_do() {
        let error = no_roots(rustls::Error::General("none loaded".into()));
        assert!(matches!(error, rustls::Error::InvalidCertificate(_)));
        let text = error.to_string();
        assert!(text.contains("none loaded"), "{text}");
        assert!(text.contains("--cacert FILE"), "{text}");
        assert!(text.contains("SSL_CERT_FILE"), "{text}");
    }
}
