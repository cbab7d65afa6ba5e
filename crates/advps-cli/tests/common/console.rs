//! Reading and typing on a console WebSocket in the live tests: what a
//! person at a terminal does, with a deadline. Shared by the container and
//! the VM console tests.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a guest may take to answer on its console, and how often the
/// reader presses Enter meanwhile (a getty prints its prompt again on it).
#[derive(Clone, Copy)]
pub struct Pace {
    pub wait: Duration,
    pub nudge_every: Duration,
}

/// Reads the console until `needle` shows, sending `nudge` at the pace's
/// interval meanwhile; returns everything read.
pub async fn expect(ws: &mut Ws, needle: &str, nudge: Option<&str>, pace: Pace) -> String {
    let deadline = Instant::now() + pace.wait;
    let mut seen = String::new();
    let mut next_nudge = Instant::now();
    while !seen.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on the console in time; it printed {seen:?}"
        );
        if let Some(nudge) = nudge {
            if Instant::now() >= next_nudge {
                send(ws, nudge).await;
                next_nudge = Instant::now() + pace.nudge_every;
            }
        }
        match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Binary(bytes)))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Some(Ok(Message::Text(text)))) => seen.push_str(text.as_str()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("the console ended ({other:?}); it printed {seen:?}"),
        }
    }
    seen
}

/// Types `text` on the console.
pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Binary(text.as_bytes().to_vec().into()))
        .await
        .expect("typed into the console");
}
