//! WebSocket upgrades through HTTP and HTTPS listeners: the 101 is relayed
//! and frames flow both ways until the close handshake, with a real
//! WebSocket client and server (tungstenite) on either side.

use shardgate_tests::config::{gateway_class, http_route, stream};
use shardgate_tests::pki::{server_name, Ca};
use shardgate_tests::{free_port, on_both_drivers, unique_ip, Driver, Gateway};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use tungstenite::Message;

const NS: &str = "ws";

/// A WebSocket backend echoing every data frame, prefixed with `echo:` for
/// text.
fn ws_echo(ip: Ipv4Addr) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(s) else {
                    return;
                };
                // Reading on after a Close lets tungstenite answer it and
                // end with ConnectionClosed.
                while let Ok(msg) = ws.read() {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("echo:{t}")),
                        Message::Binary(b) => Message::Binary(b),
                        _ => continue,
                    };
                    if ws.send(reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn service_at(name: &str, target: SocketAddr, app_protocol: Option<&str>) -> String {
    let app = app_protocol.map_or(String::new(), |p| format!(", appProtocol: {p}"));
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  ports: [{{name: p, port: 80{app}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-0\n  namespace: {NS}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: p, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
        target.port(),
        target.ip()
    )
}

/// Talks to the echo: text, a large binary message, then a clean close.
fn exchange<S: Read + Write>(mut ws: tungstenite::WebSocket<S>) {
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("echo:hello"));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake: {e}"),
        }
    }
}

fn websocket_upgrades_are_relayed(driver: Driver) {
    let ip = unique_ip();
    let (http_port, https_port) = (free_port(ip), free_port(ip));
    let backend = ws_echo(ip);
    let ca = Ca::new("ws CA");
    let leaf = ca.leaf(&["ws.example.com"]);
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {NS}}}\nspec:\n  gatewayClassName: shardgate\n  addresses: [{{type: IPAddress, value: {ip}}}]\n  listeners:\n  - {{name: http, protocol: HTTP, port: {http_port}}}\n  - {{name: https, protocol: HTTPS, port: {https_port}, tls: {{certificateRefs: [{{name: cert}}]}}}}\n"
    );
    let config = stream(&[
        gateway_class(),
        gateway,
        leaf.secret(NS, "cert"),
        service_at("ws-app", backend, Some("kubernetes.io/ws")),
        service_at("plain", backend, None),
        http_route(
            NS,
            "ws",
            "gw",
            &[],
            "  - matches: [{path: {type: PathPrefix, value: /ws}}]\n    backendRefs: [{name: ws-app, port: 80}]\n  - backendRefs: [{name: plain, port: 80}]\n",
        ),
    ]);
    let _gw = Gateway::start(driver, &[("config.yaml", config)]);

    // Plain HTTP, to a kubernetes.io/ws backend and to a plain one.
    for path in ["/ws", "/other"] {
        let tcp = TcpStream::connect((ip, http_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let url = format!("ws://ws.example.com{path}");
        let (ws, resp) = tungstenite::client(url.as_str(), tcp).expect("upgrade through HTTP");
        assert_eq!(resp.status(), 101);
        exchange(ws);
    }

    // Over TLS (wss).
    let conn =
        rustls::ClientConnection::new(ca.client_config(), server_name("ws.example.com")).unwrap();
    let tcp = TcpStream::connect((ip, https_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tls = rustls::StreamOwned::new(conn, tcp);
    let (ws, resp) =
        tungstenite::client("wss://ws.example.com/ws", tls).expect("upgrade through HTTPS");
    assert_eq!(resp.status(), 101);
    exchange(ws);
}

on_both_drivers!(websocket_upgrades_are_relayed);
