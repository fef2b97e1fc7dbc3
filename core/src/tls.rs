//! Reading the server name (SNI) out of a TLS ClientHello without
//! terminating TLS: passthrough listeners route on it, and terminating ones
//! pick the listener (and so the certificate) before the handshake starts.
//!
//! Only what routing needs is parsed (RFC 8446 §4.1.2, RFC 6066 §3); the
//! bytes themselves go on untouched. The handshake message may span several
//! records.

/// What the bytes received so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// More bytes are needed.
    Incomplete,
    /// Not a TLS ClientHello.
    Invalid,
    /// A complete ClientHello, with its `host_name`, lower-case, if any.
    Complete {
        /// The SNI host name.
        sni: Option<String>,
    },
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
/// RFC 8446 §5.1: a record holds at most 2^14 bytes of plaintext.
const MAX_RECORD: usize = 1 << 14;

/// Parses the ClientHello at the start of `buf`.
pub fn parse_client_hello(buf: &[u8]) -> ClientHello {
    let mut handshake = Vec::new();
    let mut rest = buf;
    // Gather handshake bytes from consecutive records until the message is whole.
    loop {
        if rest.len() < 5 {
            return ClientHello::Incomplete;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if rest[0] != HANDSHAKE || rest[1] != 3 || len == 0 || len > MAX_RECORD {
            return ClientHello::Invalid;
        }
        let Some(body) = rest.get(5..5 + len) else {
            return ClientHello::Incomplete;
        };
        handshake.extend_from_slice(body);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != CLIENT_HELLO {
                return ClientHello::Invalid;
            }
            let need = 4
                + (usize::from(handshake[1]) << 16
                    | usize::from(handshake[2]) << 8
                    | usize::from(handshake[3]));
            if handshake.len() >= need {
                return match server_name(&handshake[4..need]) {
                    Some(sni) => ClientHello::Complete { sni },
                    None => ClientHello::Invalid,
                };
            }
        }
    }
}

/// A cursor over big-endian, length-prefixed fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A field with a one- or two-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The SNI of a ClientHello body: `Some(None)` when it has none, `None` when
/// the body is malformed.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(None); // no extensions at all (very old clients)
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != usize::from(SERVER_NAME) {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                let name = name.strip_suffix('.').unwrap_or(name);
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return None;
                }
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal ClientHello record with an optional SNI extension.
    fn hello(sni: Option<&str>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut exts = Vec::new();
        // An unrelated extension first (supported_versions).
        exts.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            exts.extend_from_slice(&[0, 0]);
            exts.extend_from_slice(&(n + 5).to_be_bytes());
            exts.extend_from_slice(&(n + 3).to_be_bytes());
            exts.push(0);
            exts.extend_from_slice(&n.to_be_bytes());
            exts.extend_from_slice(name.as_bytes());
        }
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![CLIENT_HELLO, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![HANDSHAKE, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn reads_sni_and_lowercases_it() {
        assert_eq!(
            parse_client_hello(&hello(Some("Abc.Example.com"))),
            ClientHello::Complete {
                sni: Some("abc.example.com".into())
            }
        );
        assert_eq!(
            parse_client_hello(&hello(None)),
            ClientHello::Complete { sni: None }
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let full = hello(Some("abc.example.com"));
        for n in 0..full.len() {
            assert_eq!(
                parse_client_hello(&full[..n]),
                ClientHello::Incomplete,
                "{n}"
            );
        }
    }

    #[test]
    fn a_message_split_over_two_records_is_joined() {
        let full = hello(Some("split.example.com"));
        let hs = &full[5..];
        let (a, b) = hs.split_at(20);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[HANDSHAKE, 3, 3]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(
            parse_client_hello(&two),
            ClientHello::Complete {
                sni: Some("split.example.com".into())
            }
        );
    }

    #[test]
    fn http_is_not_tls() {
        assert_eq!(
            parse_client_hello(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ClientHello::Invalid
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_client_hello(&bytes);
        }

        #[test]
        fn corrupted_hellos_never_panic(i in 0usize..80, v in any::<u8>()) {
            let mut h = hello(Some("x.example.com"));
            let i = i % h.len();
            h[i] = v;
            let _ = parse_client_hello(&h);
        }
    }
}
