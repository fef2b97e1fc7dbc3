//! The WebSocket client of HTTPRouteBackendProtocolWebSocket (its `other_checks`: the Go test
//! dials with golang.org/x/net/websocket). One attempt opens `ws://<gateway>/ws` with an
//! `Origin` and no subprotocol, sends a text message and then a binary one, and wants each
//! payload back unchanged; like x/net's `Message.Receive`, it takes the echo in a text or a
//! binary frame (echo-basic answers in text frames) and skips pings and pongs.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// The Go test's messages.
pub const TEXT: &str = "Websocket Support!";
pub const BINARY: [u8; 7] = [1, 2, 3, 4, 5, 6, 7];

/// One round trip: handshake, both messages, close.
pub fn round_trip(addr: SocketAddr, origin: &str, timeout: Duration) -> Result<(), String> {
    let url = format!("ws://{addr}/ws");
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    let origin_value = HeaderValue::from_str(origin).map_err(|e| format!("origin: {e}"))?;
    request.headers_mut().insert("Origin", origin_value);
    let sock =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .and_then(|()| sock.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let (mut ws, _response) =
        tungstenite::client(request, sock).map_err(|e| format!("handshake with {url}: {e}"))?;
    let result = echo(&mut ws, Message::text(TEXT), TEXT.as_bytes())
        .and_then(|()| echo(&mut ws, Message::binary(BINARY.to_vec()), &BINARY));
    // Go closes with `defer ws.Close()`: a close frame, then the socket, no waiting.
    let _ = ws.close(None);
    let _ = ws.flush();
    result
}

/// Sends `message` and reads the next data message, which must carry `want`.
fn echo(ws: &mut WebSocket<TcpStream>, message: Message, want: &[u8]) -> Result<(), String> {
    let what = if message.is_text() { "text" } else { "binary" };
    ws.send(message)
        .map_err(|e| format!("sending the {what} message: {e}"))?;
    loop {
        let got = ws
            .read()
            .map_err(|e| format!("reading the {what} echo: {e}"))?;
        let payload = match got {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return Err(format!("want the {what} echo, got {other:?}")),
        };
        return if payload == want {
            Ok(())
        } else {
            Err(format!("{what} echo {payload:?}, want {want:?}"))
        };
    }
}

/// Go's `AwaitConvergence`: round trips until 3 pass in a row, within `budget` (one attempt
/// at least); the error is the last failure.
pub fn converge(addr: SocketAddr, origin: &str, budget: Duration) -> Result<(), String> {
    let deadline = Instant::now() + budget;
    let mut passes = 0;
    loop {
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_secs(1), super::traffic::REQUEST_TIMEOUT);
        match round_trip(addr, origin, timeout) {
            Ok(()) => {
                passes += 1;
                if passes == 3 {
                    return Ok(());
                }
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("websocket ws://{addr}/ws: {e}"));
            }
            Err(_) => {
                passes = 0;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A WebSocket server answering every data message with a ping and then `reply`'s
    /// message: like x/net's echo (text frames), or a broken one.
    fn server(reply: fn(Message) -> Message) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let Ok(mut ws) = tungstenite::accept(sock) else {
                    continue;
                };
                while let Ok(m) = ws.read() {
                    if m.is_text() || m.is_binary() {
                        let _ = ws.send(Message::Ping(Vec::new().into()));
                        if ws.send(reply(m)).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        addr
    }

    #[test]
    fn echoes_in_text_frames_pass_like_they_do_for_go() {
        let addr = server(|m| Message::text(String::from_utf8(m.into_data().to_vec()).unwrap()));
        converge(addr, "ws://gateway/test", Duration::from_secs(5)).expect("passes");
    }

    #[test]
    fn a_changed_payload_fails() {
        let addr = server(|_| Message::text("something else"));
        let err = round_trip(addr, "ws://gateway/test", Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("text echo"), "{err}");
    }
}
