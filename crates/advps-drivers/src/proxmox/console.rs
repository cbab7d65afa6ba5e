//! A guest's text console on Proxmox VE: `POST .../{lxc|qemu}/{vmid}/termproxy`
//! starts a `termproxy` on the node (for a VM on its `serial0`) and answers
//! its port, a one-time ticket and the user the ticket was made for; then
//! `GET .../vncwebsocket?port=..&vncticket=..` on the same API endpoint (same
//! TLS verification, same token header) upgrades to a WebSocket that
//! pveproxy relays to that port.
//!
//! What travels on it is termproxy's own protocol (as PVE's xterm.js
//! client speaks it): the first message is the login `USER:TICKET\n`, and
//! termproxy answers `OK` before the terminal's bytes; after that every
//! message from the client is `0:LEN:DATA` (keystrokes, LEN their length in
//! bytes), `1:COLS:ROWS:` (a resize) or `2` (keep-alive, every 30 s), and
//! what comes back is the terminal's output as it is. pveproxy forwards
//! frame payloads to termproxy as one byte stream, so each message is
//! complete in itself and needs no frame boundary; binary frames carry
//! them, since keystrokes need not be UTF-8.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::client::PveClient;
use crate::{ConsoleInput, ConsoleStream, DriverError, DriverResult, TerminalSize};

/// How long termproxy may take to accept the login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a message may take to reach PVE before the console is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a keep-alive goes out (what PVE's own client does; termproxy
/// ends a silent session).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);
/// Keystrokes per data message: pveproxy refuses frames over 128 KiB.
const MAX_CHUNK: usize = 16 * 1024;

/// The login message: the ticket's user and the ticket.
pub fn login_message(user: &str, ticket: &str) -> Vec<u8> {
    format!("{user}:{ticket}\n").into_bytes()
}

/// A data message: `0:LEN:DATA`, LEN in bytes.
pub fn data_message(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("0:{}:", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out
}

/// A resize message: `1:COLS:ROWS:`.
pub fn resize_message(size: TerminalSize) -> Vec<u8> {
    format!("1:{}:{}:", size.cols, size.rows).into_bytes()
}

/// The keep-alive message.
pub const KEEPALIVE: &[u8] = b"2";

/// Where a termproxy session waits, as `termproxy` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermProxy {
    pub port: u64,
    pub ticket: String,
    pub user: String,
}

/// Opens the WebSocket of a termproxy session of the guest at `guest_path`
/// (`/nodes/N/qemu/100`), logs in and starts at `size`.
pub(super) async fn attach(
    client: &PveClient,
    guest_path: &str,
    proxy: TermProxy,
    size: TerminalSize,
) -> DriverResult<ConsoleStream> {
    let params = vec![
        ("port".to_string(), proxy.port.to_string()),
        ("vncticket".to_string(), proxy.ticket.clone()),
    ];
    let mut socket = client
        .websocket(&format!("{guest_path}/vncwebsocket"), &params)
        .await?;
    let sent = tokio::time::timeout(
        SEND_TIMEOUT,
        socket.send(Message::Binary(
            login_message(&proxy.user, &proxy.ticket).into(),
        )),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return Err(DriverError::Unreachable(
            "the console's websocket closed before the login".into(),
        ));
    }
    // termproxy answers "OK" (possibly with the first output after it) or
    // closes the connection.
    let mut answer = Vec::new();
    let login = tokio::time::timeout(LOGIN_TIMEOUT, async {
        while answer.len() < 2 {
            match socket.next().await {
                Some(Ok(Message::Binary(bytes))) => answer.extend_from_slice(&bytes),
                Some(Ok(Message::Text(text))) => answer.extend_from_slice(text.as_bytes()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
            }
        }
        true
    })
    .await;
    if !matches!(login, Ok(true)) || !answer.starts_with(b"OK") {
        return Err(DriverError::Engine(
            "Proxmox VE's termproxy refused the console login".into(),
        ));
    }
    let first_output = answer.split_off(2);
    let sent = tokio::time::timeout(
        SEND_TIMEOUT,
        socket.send(Message::Binary(resize_message(size).into())),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return Err(DriverError::Unreachable(
            "the console's websocket closed after the login".into(),
        ));
    }

    let (input_tx, mut input_rx) = mpsc::channel::<ConsoleInput>(64);
    let (output_tx, output_rx) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        if !first_output.is_empty() && output_tx.send(first_output).await.is_err() {
            return;
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE_EVERY);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        loop {
            let messages: Vec<Vec<u8>> = tokio::select! {
                input = input_rx.recv() => match input {
                    Some(ConsoleInput::Bytes(bytes)) => {
                        bytes.chunks(MAX_CHUNK).map(data_message).collect()
                    }
                    Some(ConsoleInput::Resize(size)) => vec![resize_message(size)],
                    // The client's side is gone.
                    None => break,
                },
                _ = keepalive.tick() => vec![KEEPALIVE.to_vec()],
                frame = socket.next() => {
                    let bytes = match frame {
                        Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                        Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                            continue
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    };
                    if output_tx.send(bytes).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            for message in messages {
                let sent = tokio::time::timeout(
                    SEND_TIMEOUT,
                    socket.send(Message::Binary(message.into())),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
        }
        // Closing the websocket ends termproxy's session on the node.
        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close(None)).await;
    });
    Ok(ConsoleStream {
        input: input_tx,
        output: output_rx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_termproxy_s() {
        assert_eq!(
            login_message("advps@pve!advps", "PVEVNC:ABC=="),
            b"advps@pve!advps:PVEVNC:ABC==\n"
        );
        assert_eq!(data_message(b"ls\r"), b"0:3:ls\r");
        // LEN counts bytes, not characters.
        assert_eq!(data_message("é".as_bytes()), b"0:2:\xc3\xa9");
        assert_eq!(
            resize_message(TerminalSize {
                cols: 132,
                rows: 43
            }),
            b"1:132:43:"
        );
        assert_eq!(KEEPALIVE, b"2");
    }
}
