//! echo-basic's `/ws`: a WebSocket echo served by golang.org/x/net/websocket, whose handler
//! is `io.Copy(ws, ws)`. This module copies that library's behaviour rather than RFC 6455's
//! letter, since the conformance suite was written against it:
//!
//! - the handshake ([`accept`]) wants `GET` (else 405), `Upgrade: websocket` and a
//!   `Connection` naming `upgrade` (else 400), a `Sec-WebSocket-Key` (else 400) and version
//!   13 (else 400 with `Sec-WebSocket-Version: 13`); a missing or unparsable `Origin` is
//!   refused with 403 (`websocket.Handler`'s origin check). One offered subprotocol is
//!   echoed back; several are a 400.
//! - after the 101 ([`echo`]), the payload of every text, binary or continuation frame is
//!   written back as **text** frames (the server connection's default `PayloadType`), in
//!   pieces of at most 32 KiB (`io.Copy`'s buffer); empty frames produce nothing. Pings get
//!   pongs, pongs are ignored. An unmasked client frame is answered with close status 1002.
//!   A close frame ends the echo like end of file: the socket is closed without a close
//!   reply, as the Go handler returns and its connection is closed.
//!
//! Frames are parsed by [`parse_frame`] and written by [`encode_frame`], both over plain
//! byte buffers.

use hyper::header::{
    HeaderMap, HeaderValue, CONNECTION, ORIGIN, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;
/// `io.Copy`'s buffer: the largest piece one echoed frame carries.
const ECHO_CHUNK: usize = 32 * 1024;
/// Frames larger than this end the connection instead of being buffered.
const MAX_FRAME: u64 = 64 << 20;
/// RFC 6455 §5.5: control frame payloads are at most 125 bytes (x/net reads no more).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Close status 1002, protocol error.
const CLOSE_PROTOCOL_ERROR: [u8; 2] = 1002u16.to_be_bytes();

/// A handshake x/net/websocket accepts.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept`.
    pub accept_key: String,
    /// The one subprotocol the client offered, echoed back.
    pub protocol: Option<HeaderValue>,
}

/// A handshake x/net/websocket turns down, with the status it answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    /// The library's error text, written as the body (403 has none).
    pub body: &'static str,
    /// The bad-version answer also says which version is supported.
    pub says_version: bool,
}

/// The first value of a header as text ("" when absent or not text), like Go's `Header.Get`.
fn get<'a>(headers: &'a HeaderMap, name: &hyper::header::HeaderName) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// x/net/websocket's `hybiServerHandshaker.ReadHandshake` and the `Handler`'s origin check.
pub fn accept(method: &Method, headers: &HeaderMap) -> Result<Accepted, Refused> {
    let refuse = |status, body| Refused {
        status,
        body,
        says_version: false,
    };
    if method != Method::GET {
        return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "bad method"));
    }
    if !get(headers, &UPGRADE).eq_ignore_ascii_case("websocket")
        || !get(headers, &CONNECTION)
            .to_ascii_lowercase()
            .contains("upgrade")
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "not websocket protocol"));
    }
    let key = get(headers, &SEC_WEBSOCKET_KEY);
    if key.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "mismatch challenge/response",
        ));
    }
    if get(headers, &SEC_WEBSOCKET_VERSION) != "13" {
        return Err(Refused {
            status: StatusCode::BAD_REQUEST,
            body: "missing or bad WebSocket Version",
            says_version: true,
        });
    }
    // `websocket.Origin` parses the header with `url.ParseRequestURI`; no Origin at all is
    // the "null origin" the Handler refuses.
    if !is_request_uri(get(headers, &ORIGIN)) {
        return Err(refuse(StatusCode::FORBIDDEN, ""));
    }
    let offered = get(headers, &SEC_WEBSOCKET_PROTOCOL).trim();
    let protocol = if offered.is_empty() {
        None
    } else if offered.contains(',') {
        // AcceptHandshake: "You need choose a Protocol in Handshake func in Server."
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "missing or bad WebSocket Protocol",
        ));
    } else {
        HeaderValue::from_str(offered).ok()
    };
    Ok(Accepted {
        accept_key: tungstenite::handshake::derive_accept_key(key.as_bytes()),
        protocol,
    })
}

/// Whether Go's `url.ParseRequestURI` takes `s`: an absolute URI (`scheme:...`) or an
/// absolute path.
fn is_request_uri(s: &str) -> bool {
    if s.starts_with('/') {
        return true;
    }
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// One frame as received, payload unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Why the byte stream holds no valid frame.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    TooLarge(u64),
}

/// The frame at the start of `buf` and how many bytes it took; `Ok(None)` when more bytes
/// are needed.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let opcode = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("eight bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mask = if masked {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    let len = usize::try_from(len).map_err(|_| FrameError::TooLarge(len))?;
    let Some(payload) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let mut payload = payload.to_vec();
    if let Some(key) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok(Some((
        Frame {
            opcode,
            masked,
            payload,
        },
        at + len,
    )))
}

/// Appends a final, unmasked frame (a server's) to `out`.
pub fn encode_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(u8::try_from(n).expect("at most 125")),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&u16::try_from(n).expect("at most 65535").to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// What the echo sends back for one received frame, and whether it then stops.
fn answer(frame: &Frame, out: &mut Vec<u8>) -> bool {
    if !frame.masked {
        // x/net: "The client MUST mask all frames sent to the server."
        encode_frame(OP_CLOSE, &CLOSE_PROTOCOL_ERROR, out);
        return true;
    }
    match frame.opcode {
        OP_CLOSE => true,
        OP_PING => {
            let n = frame.payload.len().min(MAX_CONTROL_PAYLOAD);
            encode_frame(OP_PONG, &frame.payload[..n], out);
            false
        }
        OP_PONG => false,
        // Text, binary, continuation and unknown opcodes are all data to x/net.
        _ => {
            for piece in frame.payload.chunks(ECHO_CHUNK) {
                encode_frame(OP_TEXT, piece, out);
            }
            false
        }
    }
}

/// Echoes frames on an upgraded connection until the client closes or sends a close frame.
pub async fn echo<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some((frame, used)) = parse_frame(&buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}")))?
        {
            buf.drain(..used);
            out.clear();
            let stop = answer(&frame, &mut out);
            if !out.is_empty() {
                io.write_all(&out).await?;
                io.flush().await?;
            }
            if stop {
                return Ok(());
            }
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP_BINARY: u8 = 0x2;

    fn handshake(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const GOOD: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        ("origin", "ws://gateway/HTTPRouteBackendProtocolWebSocket"),
    ];

    #[test]
    fn a_complete_handshake_is_accepted_with_the_rfc_accept_key() {
        let got = accept(&Method::GET, &handshake(GOOD)).expect("accepted");
        assert_eq!(got.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(got.protocol, None);
        let mut with_proto = GOOD.to_vec();
        with_proto.push(("sec-websocket-protocol", " chat "));
        let got = accept(&Method::GET, &handshake(&with_proto)).expect("accepted");
        assert_eq!(got.protocol, Some(HeaderValue::from_static("chat")));
    }

    #[test]
    fn handshakes_without_origin_are_forbidden() {
        let no_origin: Vec<_> = GOOD
            .iter()
            .copied()
            .filter(|(k, _)| *k != "origin")
            .collect();
        let err = accept(&Method::GET, &handshake(&no_origin)).expect_err("refused");
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        let mut bad = no_origin.clone();
        bad.push(("origin", "gateway"));
        let err = accept(&Method::GET, &handshake(&bad)).expect_err("refused");
        assert_eq!(err.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn malformed_handshakes_get_x_net_statuses() {
        let status = |method: Method, drop: &str, add: &[(&'static str, &'static str)]| {
            let mut pairs: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != drop).collect();
            pairs.extend_from_slice(add);
            accept(&method, &handshake(&pairs)).map(|_| ())
        };
        assert_eq!(
            status(Method::POST, "", &[]).unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(Method::GET, "upgrade", &[]).unwrap_err().body,
            "not websocket protocol"
        );
        assert_eq!(
            status(Method::GET, "sec-websocket-key", &[])
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
        let version = status(
            Method::GET,
            "sec-websocket-version",
            &[("sec-websocket-version", "8")],
        )
        .unwrap_err();
        assert!(version.says_version);
        assert_eq!(
            status(Method::GET, "", &[("sec-websocket-protocol", "a, b")])
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
    }

    /// A masked client frame, as a browser or Go's client sends it.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    #[test]
    fn frames_parse_once_complete_and_unmask() {
        // RFC 6455 §5.7: a masked "Hello".
        let hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        for cut in 0..hello.len() {
            assert_eq!(parse_frame(&hello[..cut]), Ok(None), "cut at {cut}");
        }
        let (frame, used) = parse_frame(&hello).expect("valid").expect("complete");
        assert_eq!(used, hello.len());
        assert_eq!(frame.payload, b"Hello");
        assert_eq!((frame.opcode, frame.masked), (OP_TEXT, true));

        let big = vec![7u8; 70_000];
        let wire = client_frame(OP_BINARY, &big);
        let (frame, used) = parse_frame(&wire).expect("valid").expect("complete");
        assert_eq!((frame.payload, used), (big, wire.len()));

        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_frame(&huge), Err(FrameError::TooLarge(u64::MAX)));
    }

    #[test]
    fn server_frames_use_the_shortest_length_form() {
        let mut out = Vec::new();
        encode_frame(OP_TEXT, b"Hi", &mut out);
        assert_eq!(out, [0x81, 0x02, b'H', b'i']);
        for (len, header) in [(126usize, 4usize), (65_536, 10)] {
            let mut out = Vec::new();
            encode_frame(OP_BINARY, &vec![0; len], &mut out);
            assert_eq!(out.len(), header + len);
            let (frame, _) = parse_frame(&out).expect("valid").expect("complete");
            assert_eq!((frame.payload.len(), frame.masked), (len, false));
        }
    }

    fn answered(wire: &[u8]) -> (Vec<Frame>, bool) {
        let (frame, _) = parse_frame(wire).expect("valid").expect("complete");
        let mut out = Vec::new();
        let stop = answer(&frame, &mut out);
        let mut frames = Vec::new();
        let mut rest = &out[..];
        while let Some((f, used)) = parse_frame(rest).expect("valid") {
            frames.push(f);
            rest = &rest[used..];
        }
        (frames, stop)
    }

    #[test]
    fn data_comes_back_as_text_frames_like_x_net() {
        let (frames, stop) = answered(&client_frame(OP_BINARY, &[1, 2, 3, 4, 5, 6, 7]));
        assert!(!stop);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].opcode, OP_TEXT);
        assert_eq!(frames[0].payload, [1, 2, 3, 4, 5, 6, 7]);

        let (frames, _) = answered(&client_frame(OP_TEXT, &vec![b'a'; 40_000]));
        let sizes: Vec<usize> = frames.iter().map(|f| f.payload.len()).collect();
        assert_eq!(sizes, [ECHO_CHUNK, 40_000 - ECHO_CHUNK]);

        assert_eq!(answered(&client_frame(OP_TEXT, b"")), (Vec::new(), false));
    }

    #[test]
    fn control_frames_are_handled_like_x_net() {
        let (frames, stop) = answered(&client_frame(OP_PING, b"p"));
        assert!(!stop);
        assert_eq!(
            (frames[0].opcode, &frames[0].payload[..]),
            (OP_PONG, &b"p"[..])
        );
        assert_eq!(answered(&client_frame(OP_PONG, b"p")), (Vec::new(), false));
        // A close ends the echo without a close reply.
        assert_eq!(
            answered(&client_frame(OP_CLOSE, &[3, 232])),
            (Vec::new(), true)
        );
        // Unmasked client frames are a protocol error.
        let mut unmasked = Vec::new();
        encode_frame(OP_TEXT, b"x", &mut unmasked);
        let (frames, stop) = answered(&unmasked);
        assert!(stop);
        assert_eq!(frames[0].opcode, OP_CLOSE);
        assert_eq!(frames[0].payload, CLOSE_PROTOCOL_ERROR);
    }

    #[tokio::test]
    async fn the_echo_loop_answers_until_the_client_closes() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(echo(server));
        let mut wire = client_frame(OP_TEXT, b"Websocket Support!");
        wire.extend(client_frame(OP_BINARY, &[1, 2, 3]));
        client.write_all(&wire).await.expect("write");
        let mut want = Vec::new();
        encode_frame(OP_TEXT, b"Websocket Support!", &mut want);
        encode_frame(OP_TEXT, &[1, 2, 3], &mut want);
        let mut got = vec![0u8; want.len()];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(got, want);
        client
            .write_all(&client_frame(OP_CLOSE, &[]))
            .await
            .expect("write");
        task.await.expect("joined").expect("clean end");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read");
        assert!(rest.is_empty(), "no close reply: {rest:?}");
    }
}
