//! Reading the server name from a TLS ClientHello without terminating TLS (passthrough).

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Sni {
    /// More bytes are needed.
    Incomplete,
    /// A ClientHello carrying this server name (lower-cased).
    Name(String),
    /// A ClientHello without SNI.
    Missing,
    /// Not a TLS handshake.
    NotTls,
}

/// Parse the SNI from the start of a TLS connection (the first handshake record).
pub fn parse(buf: &[u8]) -> Sni {
    if buf.len() < 5 {
        return Sni::Incomplete;
    }
    if buf[0] != 0x16 || buf[1] != 0x03 {
        return Sni::NotTls;
    }
    let rec_len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < 5 + rec_len {
        return Sni::Incomplete;
    }
    parse_hello(&buf[5..5 + rec_len]).unwrap_or(Sni::NotTls)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
}

fn parse_hello(hs: &[u8]) -> Option<Sni> {
    let mut c = Cursor(hs);
    if c.u8()? != 1 {
        return Some(Sni::NotTls); // not a ClientHello
    }
    let len = c.take(3)?;
    let len = ((len[0] as usize) << 16) | ((len[1] as usize) << 8) | len[2] as usize;
    // A ClientHello longer than its first record (huge post-quantum key shares) is cut short
    // here; SNI normally sits early enough, and if not we answer Missing rather than hang.
    let body = &c.0[..len.min(c.0.len())];
    let mut c = Cursor(body);
    c.take(2)?; // legacy_version
    c.take(32)?; // random
    let sid = c.u8()?;
    c.take(sid)?;
    let suites = c.u16()?;
    c.take(suites)?;
    let comp = c.u8()?;
    c.take(comp)?;
    let Some(ext_len) = c.u16() else {
        return Some(Sni::Missing);
    };
    let mut exts = Cursor(c.take(ext_len.min(c.0.len()))?);
    while let (Some(ty), Some(l)) = (exts.u16(), exts.u16()) {
        let data = exts.take(l)?;
        if ty == 0 {
            let mut d = Cursor(data);
            let list_len = d.u16()?;
            let mut list = Cursor(d.take(list_len)?);
            while let Some(kind) = list.u8() {
                let n = list.u16()?;
                let name = list.take(n)?;
                if kind == 0 {
                    return Some(Sni::Name(String::from_utf8_lossy(name).to_ascii_lowercase()));
                }
            }
        }
    }
    Some(Sni::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello from rustls, so the parser is checked against what clients send.
    fn client_hello(name: &str) -> Vec<u8> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), sn).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_the_server_name_of_a_real_client_hello() {
        let hello = client_hello("Rsync-Ns1.apps.dst.lab");
        assert_eq!(parse(&hello), Sni::Name("rsync-ns1.apps.dst.lab".into()));
        // Byte by byte: never a wrong answer before the record is complete.
        for n in 0..hello.len() {
            assert_eq!(parse(&hello[..n]), Sni::Incomplete, "prefix of {n} bytes");
        }
    }

    #[test]
    fn rejects_plain_text() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Sni::NotTls);
        assert_eq!(parse(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00"), Sni::NotTls);
    }
}
