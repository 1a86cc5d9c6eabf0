//! A test CA (rcgen), the leaf certificates it signs, and a TLS client that trusts it.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

/// A test CA, its PEM file, and leaf certificates it signs into a certificates directory.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(pem: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Its own name: a leaf named like its issuer looks self-signed to OpenSSL.
        params.distinguished_name = rcgen::DistinguishedName::new();
        (params.distinguished_name).push(rcgen::DnType::CommonName, "deploy test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(pem, issuer.pem()).unwrap();
        Self { issuer }
    }

    /// `<dir>/<file>` with a new key, its certificate for `name` and the CA, written whole
    /// and renamed into place, as an operator's tool would.
    pub fn issue(&self, dir: &Path, file: &str, name: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let cert = (CertificateParams::new(vec![name.to_owned()]).unwrap())
            .signed_by(&key, &self.issuer)
            .unwrap();
        let pem = format!("{}{}{}", key.serialize_pem(), cert.pem(), self.issuer.pem());
        let partial = dir.join(format!(".{file}.new"));
        std::fs::write(&partial, pem).unwrap();
        std::fs::rename(partial, dir.join(file)).unwrap();
        cert.der().clone()
    }

    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every request a full handshake: a resumed session shows the certificate of the
        // session it resumes.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}
