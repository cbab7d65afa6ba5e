//! TLS pieces both HTTPS drivers share: a server verifier that accepts
//! exactly the certificate with a pinned SHA-256 fingerprint (how LXD's and
//! Proxmox's self-signed certificates are usually trusted), and words for a
//! failed handshake that say which side refused what.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct};
use sha2::{Digest, Sha256};

/// Accepts exactly the certificate whose SHA-256 digest is pinned. The
/// chain and name checks are replaced by that comparison; the handshake's
/// signatures are still checked against the certificate's key.
#[derive(Debug)]
pub struct PinnedFingerprint {
    pinned: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// How fingerprints are shown in errors (each engine's own notation).
    show: fn(&[u8]) -> String,
}

impl PinnedFingerprint {
    pub fn new(pinned: [u8; 32], provider: Arc<CryptoProvider>, show: fn(&[u8]) -> String) -> Self {
        PinnedFingerprint {
            pinned,
            provider,
            show,
        }
    }

    /// Pins a certificate given whole.
    pub fn of_certificate(
        cert: &CertificateDer<'_>,
        provider: Arc<CryptoProvider>,
        show: fn(&[u8]) -> String,
    ) -> Self {
        Self::new(sha256(cert.as_ref()), provider, show)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Why a pinned connection was refused, with both fingerprints; carried
/// through rustls to [`describe_tls_error`].
#[derive(Debug)]
struct PinMismatch {
    presented: String,
    pinned: String,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's certificate ({}) is not the pinned server certificate ({})",
            self.presented, self.pinned
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinnedFingerprint {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = sha256(end_entity.as_ref());
        if presented == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    presented: (self.show)(&presented),
                    pinned: (self.show)(&self.pinned),
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Words for a failed handshake. `client_certificate` says whether this
/// side presented one, so a refusal by the server can suggest checking it.
pub fn describe_tls_error(error: &std::io::Error, client_certificate: bool) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return error.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.to_string(),
        rustls::Error::InvalidCertificate(e) => {
            format!("the server's certificate was refused: {e}")
        }
        rustls::Error::AlertReceived(alert) if client_certificate => format!(
            "the server refused the connection ({alert:?}); does it accept this client certificate?"
        ),
        other => other.to_string(),
    }
}
