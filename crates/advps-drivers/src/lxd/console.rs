//! An instance's text console on LXD: `POST /1.0/instances/{name}/console`
//! (type `console`, the terminal's width and height) starts an operation
//! with two websockets, `0` for the console's bytes and `control` for
//! window resizes; both are opened here and carried to a [`ConsoleStream`].
//! Closing them (when the client's side goes) detaches from the console and
//! ends the operation.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::client::{error_from, Body, LxdClient};
use crate::{ConsoleInput, ConsoleStream, DriverError, DriverResult, TerminalSize};

/// How long a frame may take to reach LXD before the console is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

fn resize_command(size: TerminalSize) -> String {
    json!({
        "command": "window-resize",
        "args": {"width": size.cols.to_string(), "height": size.rows.to_string()},
    })
    .to_string()
}

/// Attaches to `instance`'s console.
pub(super) async fn attach(
    client: &LxdClient,
    instance: &str,
    size: TerminalSize,
) -> DriverResult<ConsoleStream> {
    let body = json!({"type": "console", "width": size.cols, "height": size.rows});
    let (status, answer) = client
        .exchange(
            Method::POST,
            &format!("/1.0/instances/{instance}/console"),
            Body::Json(&body),
        )
        .await?;
    if answer.get("type").and_then(Value::as_str) != Some("async") {
        return Err(error_from(status, &answer));
    }
    let operation = answer
        .pointer("/metadata/id")
        .and_then(Value::as_str)
        .ok_or_else(|| DriverError::Engine("console answer without an operation id".into()))?;
    let secret = |fd: &str| {
        answer
            .pointer(&format!("/metadata/metadata/fds/{fd}"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| DriverError::Engine(format!("console answer without its {fd} channel")))
    };
    let channel = |secret: String| format!("/1.0/operations/{operation}/websocket?secret={secret}");
    let mut data = client.websocket(&channel(secret("0")?)).await?;
    let mut control = client.websocket(&channel(secret("control")?)).await?;

    let (input_tx, mut input_rx) = mpsc::channel::<ConsoleInput>(64);
    let (output_tx, output_rx) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                input = input_rx.recv() => {
                    let sent = match input {
                        Some(ConsoleInput::Bytes(bytes)) => {
                            tokio::time::timeout(SEND_TIMEOUT, data.send(Message::Binary(bytes.into()))).await
                        }
                        Some(ConsoleInput::Resize(size)) => {
                            tokio::time::timeout(SEND_TIMEOUT, control.send(Message::Text(resize_command(size).into()))).await
                        }
                        // The client's side is gone.
                        None => break,
                    };
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                frame = data.next() => match frame {
                    Some(Ok(Message::Binary(bytes))) => {
                        if output_tx.send(bytes.to_vec()).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        if output_tx.send(text.as_bytes().to_vec()).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                frame = control.next() => match frame {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        // Detaches: LXD ends the console operation when its websockets close.
        let _ = tokio::time::timeout(SEND_TIMEOUT, control.close(None)).await;
        let _ = tokio::time::timeout(SEND_TIMEOUT, data.close(None)).await;
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
    fn resizes_are_lxd_window_resize_commands() {
        let command: Value = serde_json::from_str(&resize_command(TerminalSize {
            cols: 132,
            rows: 43,
        }))
        .unwrap();
        assert_eq!(
            command,
            json!({"command": "window-resize", "args": {"width": "132", "height": "43"}})
        );
    }
}
