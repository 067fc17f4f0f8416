//! Per-migration TLS for the transfer tunnel: a CA generated for this transfer signs one
//! server and one client certificate; both stunnel ends require the other's certificate
//! (`verify = 2`), so only the two pods of this transfer can talk to each other, and a
//! certificate from any other transfer (or any public CA) is refused.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM material for one side of the tunnel. Holds private keys: never log it.
#[derive(Clone)]
pub struct TunnelCerts {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl std::fmt::Debug for TunnelCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunnelCerts(..)")
    }
}

/// The name in the server certificate. It is not the endpoint's host: the certificates are
/// made before the Route or LoadBalancer has an address, so the server pod starts while the
/// endpoint is still being admitted. The router routes by SNI (the endpoint's host) and
/// passes TLS through untouched; the per-transfer CA is what makes the certificate
/// trustworthy (stunnel's `verifyChain`, as before: it never checked the host name).
pub const SERVER_NAME: &str = "mtcd-transfer-server";

pub fn generate(label: &str) -> Result<TunnelCerts, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("mtcd transfer CA {label}"));
    ca_params.distinguished_name = dn;
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut server = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    server.distinguished_name.push(DnType::CommonName, SERVER_NAME);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &ca)?;

    let mut client = CertificateParams::new(vec!["mtcd-transfer-client".to_string()])?;
    client.distinguished_name.push(DnType::CommonName, "mtcd-transfer-client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &ca)?;

    Ok(TunnelCerts {
        ca: ca.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transfer_gets_its_own_ca() {
        let a = generate("a").unwrap();
        let b = generate("b").unwrap();
        assert_ne!(a.ca, b.ca);
        assert!(a.server_key.contains("PRIVATE KEY"));
        assert_eq!(format!("{a:?}"), "TunnelCerts(..)", "keys never reach logs");
    }
}
