//! The TLS client configuration of every outbound HTTPS connection (IdP, proxied upstreams, the
//! `healthcheck` command): rustls with the ring provider, server certificates verified by
//! rustls-platform-verifier against the operating system's trust roots.
//!
//! The roots are read once per process — at start-up when an IdP or upstream URL is https
//! (`preload`), else when the first certificate has to be verified — and shared by every client. Reading and parsing the system bundle (about 150 PEM certificates)
//! was done twice at start-up before — once per HTTP client — and was the largest share of the
//! idle process's memory (docs/benchmarks.md); a deployment that talks to nothing over TLS
//! never pays for it. Verification itself is exactly the platform verifier's.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;
use std::sync::{Arc, OnceLock};

/// A client configuration (no ALPN set: each client sets its own) sharing the process's roots.
pub fn client_config() -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(system_roots())
        .with_no_client_auth())
}

/// `config` offering HTTP/2 and HTTP/1.1, as reqwest does with its own configurations.
pub fn alpn(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Load the trust roots now, failing if they cannot be loaded: start-up calls this when an
/// IdP or upstream URL is https, so that a broken CA bundle stops the service instead of
/// surfacing as handshake failures, and no request waits on reading it.
pub fn preload() -> Result<(), rustls::Error> {
    system_roots().get().map(|_| ())
}

/// ring, the one provider the binary installs; the configuration and the verifier share it.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

fn system_roots() -> Arc<SystemRoots> {
    static ROOTS: OnceLock<Arc<SystemRoots>> = OnceLock::new();
    ROOTS.get_or_init(|| Arc::new(SystemRoots { provider: provider(), verifier: OnceLock::new() })).clone()
}

/// The platform verifier, built on first use.
#[derive(Debug)]
struct SystemRoots {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Verifier, rustls::Error>>,
}

impl SystemRoots {
    fn get(&self) -> Result<&Verifier, rustls::Error> {
        let loaded = self.verifier.get_or_init(|| {
            let v = Verifier::new(self.provider.clone());
            if let Err(e) = &v {
                tracing::error!(error = %e, "the system's TLS trust roots could not be loaded; every HTTPS connection will fail");
            }
            v
        });
        loaded.as_ref().map_err(Clone::clone)
    }
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.get()?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get()?.verify_tls13_signature(message, cert, dss)
    }

    /// Asked for every ClientHello, before any certificate arrives: answered from the provider
    /// (what the platform verifier answers too) so that it does not load the roots by itself.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_shared_and_not_loaded_until_a_certificate_is_verified() {
        let (a, b) = (system_roots(), system_roots());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(client_config().is_ok());
        assert!(!a.supported_verify_schemes().is_empty());
        // No unit test makes an HTTPS connection: building clients must not have read the roots.
        assert!(a.verifier.get().is_none());
    }
}
