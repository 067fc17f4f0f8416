//! The lab's certificate authority: one CA per lab, so a single `ca.crt` in the kubeconfig
//! trusts both API servers, exactly like a real cluster's CA bundle.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Errors creating lab certificates or TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not generate a key or sign a certificate.
    #[error("generating lab certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the generated certificate or key.
    #[error("building TLS server configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A certificate authority held in memory for the life of the lab process.
pub struct LabCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Installs ring as rustls' process-wide provider (the workspace never builds aws-lc).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl LabCa {
    /// A fresh CA; its name carries `label` so two labs' certificates are easy to tell apart.
    pub fn generate(label: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("mtcd-lab CA {label}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA certificate (what clients put in `certificate-authority-data`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, common_name: &str, dns: &[&str], ips: &[IpAddr]) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A rustls server configuration offering HTTP/2 and HTTP/1.1 (kubectl uses h2, kube-rs h1).
pub fn server_config(cert: &IssuedCert) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    init_crypto();
    let certs = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
    let key = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
        .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?
        .ok_or_else(|| PkiError::Tls(rustls::Error::General("no private key in PEM".into())))?;
    let mut cfg = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
