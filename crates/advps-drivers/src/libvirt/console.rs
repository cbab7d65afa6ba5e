//! A domain's serial console, through `virsh console`.
//!
//! Why `virsh console` under util-linux `script`, and not the serial
//! chardev's pty read directly: `virsh console` streams the console over
//! libvirt's own connection, so it works the same for `qemu:///system` and
//! for remote hosts (`qemu+ssh://`, `qemu+tls://`), where the pty is on
//! another machine; and libvirt keeps one console session per domain, which
//! a reader of the pty would bypass. `virsh console` refuses to run without
//! a terminal, so `script` gives it one (a pty of its own, the output going
//! to `/dev/null` as a log). `script` is in util-linux (Debian's essential
//! `bsdutils`), so nothing is added to a host that has `virsh`.
//!
//! - The console is opened with `--force`: the newest console takes the
//!   serial line over and an older session is closed, as on a KVM switch, so
//!   a customer whose browser went away is never locked out by a stale one.
//! - virsh's banner (`Connected to domain ...`, `Escape character is ^]`)
//!   tells an opened console from a refused one; it is not passed on. Before
//!   it, whatever virsh printed is its error.
//! - A serial line carries no window size, so resizes are accepted and not
//!   passed on (in the guest, `stty cols C rows R` sets the size).
//! - virsh's escape character (Ctrl+]) typed by the client ends the console,
//!   as it does for an operator.
//! - The console connects as every other call does ([`Virsh::connection`]):
//!   a node's sealed SSH key, host keys or TLS files are written for it and
//!   removed when the console ends.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::virsh::{classify, scrub, Connection, Virsh};
use crate::{ConsoleInput, ConsoleStream, DriverError, DriverResult};

/// How long virsh may take to attach to the console.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);
/// The last words of virsh's banner once the console is attached.
const BANNER_END: &str = "Escape character is";

/// Quotes a word for the shell `script` runs its command with.
fn shell_word(word: &str) -> DriverResult<String> {
    if word.contains(['\'', '\n', '\r', '\0']) {
        return Err(DriverError::Engine(
            "the console's connection URI holds a quote or a line break".into(),
        ));
    }
    Ok(format!("'{word}'"))
}

/// The command line `script` runs: `virsh -c URI console --force NAME`,
/// with the URI of `connection` (the node's, plus its credentials' files).
pub fn console_command_line(
    virsh: &Virsh,
    connection: &Connection,
    domain: &str,
) -> DriverResult<String> {
    Ok(format!(
        "exec {} -c {} console --force {}",
        shell_word(&virsh.program().to_string_lossy())?,
        shell_word(connection.uri())?,
        shell_word(domain)?
    ))
}

/// Where virsh's banner ends in `seen` (after its line break), if it has.
fn banner_end(seen: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(seen);
    let at = text.find(BANNER_END)?;
    let line_end = text[at..].find('\n')?;
    // Byte offsets of the lossy text match the raw bytes up to here: the
    // banner is ASCII, and what came before it is virsh's own (ASCII) text.
    Some(at + line_end + 1)
}

/// Attaches to `domain`'s serial console.
pub(super) async fn attach(virsh: &Virsh, domain: &str) -> DriverResult<ConsoleStream> {
    // Kept until the console ends: virsh's ssh reads the files it names.
    let connection = virsh.connection()?;
    let line = console_command_line(virsh, &connection, domain)?;
    let mut child = tokio::process::Command::new("script")
        .args(["-q", "-f", "-e", "-E", "never", "-c", &line, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("LC_ALL", "C")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            DriverError::Unreachable(format!(
                "cannot run script (util-linux) for the console: {e}"
            ))
        })?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| DriverError::Engine("the console has no input".into()))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| DriverError::Engine("the console has no output".into()))?;

    // Until the banner, what virsh prints is either it or an error.
    let mut seen = Vec::new();
    let mut buffer = vec![0u8; 8192];
    let attached = tokio::time::timeout(ATTACH_TIMEOUT, async {
        loop {
            if let Some(end) = banner_end(&seen) {
                return Ok(end);
            }
            match stdout.read(&mut buffer).await {
                Ok(0) | Err(_) => return Err(()),
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let end = match attached {
        Ok(Ok(end)) => end,
        Ok(Err(())) => {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), pipe.read_to_string(&mut stderr))
                        .await;
            }
            let said = format!("{}\n{stderr}", String::from_utf8_lossy(&seen));
            return Err(match classify(&scrub(&said, connection.private_dir())) {
                DriverError::Engine(m) if m.is_empty() => {
                    DriverError::Engine("virsh console ended at once".into())
                }
                other => other,
            });
        }
        Err(_) => {
            return Err(DriverError::Timeout(format!(
                "virsh console did not attach within {} s",
                ATTACH_TIMEOUT.as_secs()
            )))
        }
    };
    let first = seen.split_off(end);

    let (input_tx, mut input_rx) = mpsc::channel::<ConsoleInput>(64);
    let (output_tx, output_rx) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        if !first.is_empty() && output_tx.send(first).await.is_err() {
            return;
        }
        let mut buffer = vec![0u8; 8192];
        loop {
            tokio::select! {
                input = input_rx.recv() => match input {
                    Some(ConsoleInput::Bytes(bytes)) => {
                        if stdin.write_all(&bytes).await.is_err() || stdin.flush().await.is_err() {
                            break;
                        }
                    }
                    // A serial line has no window size to carry.
                    Some(ConsoleInput::Resize(_)) => {}
                    // The client's side is gone.
                    None => break,
                },
                read = stdout.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if output_tx.send(buffer[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
        // Detaches: virsh ends its console stream when it is killed.
        let _ = child.kill().await;
        drop(connection);
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
    fn the_banner_is_found_after_its_line_break() {
        let text = b"Connected to domain 'vm1'\r\nEscape character is ^] (Ctrl + ])\r\nDebian";
        let end = banner_end(text).unwrap();
        assert_eq!(&text[end..], b"Debian");
        assert_eq!(
            banner_end(b"Connected to domain 'vm1'\r\nEscape char"),
            None
        );
        assert_eq!(banner_end(b"error: failed to get domain 'x'\n"), None);
    }

    #[test]
    fn the_command_line_quotes_every_word() {
        let virsh = Virsh::new("qemu+ssh://advps@kvm2/system?keyfile=/k&no_verify=0");
        let connection = virsh.connection().unwrap();
        let line = console_command_line(&virsh, &connection, "web-vm1").unwrap();
        assert!(
            line.ends_with(
                "-c 'qemu+ssh://advps@kvm2/system?keyfile=/k&no_verify=0' console --force 'web-vm1'"
            ),
            "{line}"
        );
        let hostile = Virsh::new("qemu:///system'; rm -rf /");
        let connection = hostile.connection().unwrap();
        assert!(console_command_line(&hostile, &connection, "vm").is_err());
    }
}
