//! Machine consoles over WebSocket.
//!
//! `POST /api/v1/services/{id}/console` hands out a ticket: a random secret,
//! kept only as its digest, bound to the caller's account, mode, key and
//! service, that opens one console within the configured lifetime. The
//! WebSocket at `/api/v1/console/{ticket}` takes (deletes) it and carries the
//! machine's text console both ways: binary frames are the console's bytes,
//! text frames are JSON control messages (a resize). advps proxies the
//! engine's console, so the client never reaches the engine; sandbox services
//! get a simulated shell that says what it is.
//!
//! An open console is not cut by the ticket's expiry, but it is closed (with
//! a close code saying why) once its service stops, is rebuilt or removed, or
//! its key is revoked: each console checks once a second. At most
//! [`MAX_CONSOLES_PER_SERVICE`] are open on one service in one process, and
//! at most `console_max_sessions` (default 64) in the whole process: each
//! holds a task, a WebSocket and, on a live service, a connection to the
//! engine, so a process must not take them without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine as _;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use advps_domain::{time, PowerState};
use advps_drivers::{ConsoleInput, ConsoleStream, TerminalSize};
use advps_store::{ConsoleTicket, Scope, Store};

/// Consoles open at once on one service.
pub const MAX_CONSOLES_PER_SERVICE: usize = 3;
/// The message of the 409 past [`MAX_CONSOLES_PER_SERVICE`].
pub const TOO_MANY_CONSOLES: &str = "At most 3 consoles can be open on a service at once";
/// The message of the 503 past the process's `console_max_sessions`.
pub const SERVER_CONSOLES_FULL: &str = "Too many consoles are open on this server; retry later";
/// The `Retry-After` of that 503, in seconds.
pub const SERVER_CONSOLES_RETRY_AFTER_SECS: u64 = 30;
/// The size a console starts at, until the client sends its own.
pub const DEFAULT_SIZE: TerminalSize = TerminalSize { cols: 80, rows: 24 };
/// How often an open console checks its service and key.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one frame may take to reach a client before the console is
/// given up (a client that stopped reading).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame a client may send.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest terminal accepted in a resize.
const MAX_CELLS: u16 = 1000;

/// Close codes: why the server ended a console.
pub mod close {
    /// The console ended on the machine's side (the simulated shell's `exit`).
    pub const ENDED: u16 = 1000;
    /// The engine's console could not be reached or failed.
    pub const UNAVAILABLE: u16 = 1011;
    /// The service stopped (or was suspended).
    pub const STOPPED: u16 = 4000;
    /// A rebuild of the service began.
    pub const REBUILDING: u16 = 4001;
    /// The key the console was opened with was revoked.
    pub const KEY_REVOKED: u16 = 4003;
    /// The service was removed.
    pub const REMOVED: u16 = 4004;
}

/// The consoles open in this process, counted per service and in all.
pub struct Consoles {
    open: Mutex<HashMap<i64, usize>>,
    /// Consoles the process may hold at once.
    max_sessions: usize,
}

/// Why no place for another console was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The service has [`MAX_CONSOLES_PER_SERVICE`] open.
    Service,
    /// The process has its `console_max_sessions` open.
    Process,
}

impl Full {
    /// The API's refusal: 409 for the service's cap (the caller's own
    /// consoles), 503 with `Retry-After` for the process's (capacity).
    pub fn into_error(self) -> crate::ApiError {
        match self {
            Full::Service => crate::ApiError::Conflict {
                message: TOO_MANY_CONSOLES.into(),
                errors: None,
            },
            Full::Process => crate::ApiError::Overloaded {
                message: SERVER_CONSOLES_FULL.into(),
                retry_after_secs: SERVER_CONSOLES_RETRY_AFTER_SECS,
            },
        }
    }
}

/// One open console's place in [`Consoles`], given back when dropped.
pub struct ConsoleSlot {
    consoles: Arc<Consoles>,
    service_pk: i64,
}

impl Consoles {
    /// Counts consoles for a process that may hold `max_sessions` at once.
    pub fn new(max_sessions: usize) -> Consoles {
        Consoles {
            open: Mutex::new(HashMap::new()),
            max_sessions,
        }
    }

    /// Consoles open on a service now.
    pub fn open_on(&self, service_pk: i64) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&service_pk).copied().unwrap_or(0)
    }

    /// Whether one more console could open on the service now (a check
    /// before a ticket is handed out; [`Consoles::acquire`] decides).
    pub fn check(&self, service_pk: i64) -> Result<(), Full> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        Self::room(&open, self.max_sessions, service_pk)
    }

    fn room(open: &HashMap<i64, usize>, max_sessions: usize, service_pk: i64) -> Result<(), Full> {
        if open.get(&service_pk).copied().unwrap_or(0) >= MAX_CONSOLES_PER_SERVICE {
            return Err(Full::Service);
        }
        if open.values().sum::<usize>() >= max_sessions {
            return Err(Full::Process);
        }
        Ok(())
    }

    /// Takes a place for one more console on the service, unless it has
    /// [`MAX_CONSOLES_PER_SERVICE`] already or the process its
    /// `max_sessions`.
    pub fn acquire(self: &Arc<Self>, service_pk: i64) -> Result<ConsoleSlot, Full> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        Self::room(&open, self.max_sessions, service_pk)?;
        *open.entry(service_pk).or_insert(0) += 1;
        Ok(ConsoleSlot {
            consoles: Arc::clone(self),
            service_pk,
        })
    }
}

impl Drop for ConsoleSlot {
    fn drop(&mut self) {
        let mut open = self.consoles.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.service_pk) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.service_pk);
            }
        }
    }
}

/// A new ticket secret (256 random bits, URL-safe) and its digest.
pub fn new_ticket() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let digest = ticket_digest(&secret);
    (secret, digest)
}

/// The digest a ticket is stored and found under.
pub fn ticket_digest(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// Whether a path segment can be a ticket at all (so that junk costs no
/// store lookup).
pub fn plausible_ticket(secret: &str) -> bool {
    secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The size a console starts at: `cols` and `rows` from the WebSocket URL's
/// query when both are given, else [`DEFAULT_SIZE`].
pub fn initial_size(cols: Option<&String>, rows: Option<&String>) -> Result<TerminalSize, String> {
    let cell = |raw: &String| {
        raw.parse::<u16>()
            .ok()
            .filter(|n| (1..=MAX_CELLS).contains(n))
            .ok_or_else(|| format!("cols and rows must be whole numbers from 1 to {MAX_CELLS}"))
    };
    match (cols, rows) {
        (None, None) => Ok(DEFAULT_SIZE),
        (Some(cols), Some(rows)) => Ok(TerminalSize {
            cols: cell(cols)?,
            rows: cell(rows)?,
        }),
        _ => Err("cols and rows come together".to_string()),
    }
}

/// A control message a client sends in a text frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Control {
    /// The client's terminal is now `cols` × `rows`.
    Resize { cols: u32, rows: u32 },
    /// Keystrokes as text (for clients that cannot send binary frames).
    Input { data: String },
}

/// Reads a text frame into what it asks of the console.
fn parse_control(text: &str) -> Result<ConsoleInput, String> {
    match serde_json::from_str::<Control>(text) {
        Ok(Control::Resize { cols, rows }) => {
            let valid = |n: u32| (1..=u32::from(MAX_CELLS)).contains(&n);
            if !valid(cols) || !valid(rows) {
                return Err(format!(
                    "cols and rows must be whole numbers from 1 to {MAX_CELLS}"
                ));
            }
            Ok(ConsoleInput::Resize(TerminalSize {
                cols: cols as u16,
                rows: rows as u16,
            }))
        }
        Ok(Control::Input { data }) => Ok(ConsoleInput::Bytes(data.into_bytes())),
        Err(_) => Err(
            "Text frames must be JSON control messages: {\"type\":\"resize\",\"cols\":N,\"rows\":M} \
             or {\"type\":\"input\",\"data\":\"...\"}; send console bytes in binary frames"
                .to_string(),
        ),
    }
}

/// Why an open console must close now, if it must: its key revoked, its
/// service gone, rebuilding or no longer running.
async fn must_close(store: &dyn Store, ticket: &ConsoleTicket) -> Option<(u16, &'static str)> {
    let keys = match store.list_api_keys(ticket.account_id).await {
        Ok(keys) => keys,
        Err(e) => {
            // A storage hiccup is no reason to cut a console; the next
            // check decides.
            tracing::warn!(error = %e, "console check: could not read the keys");
            return None;
        }
    };
    if !keys
        .iter()
        .any(|k| k.id == ticket.key_id && k.revoked_at.is_none())
    {
        return Some((close::KEY_REVOKED, "The API key was revoked"));
    }
    let scope = Scope {
        account_id: ticket.account_id,
        mode: ticket.mode,
    };
    match store.find_service(scope, &ticket.service_id).await {
        Ok(Some(service)) if service.pk == ticket.service_pk => match service.power_state {
            PowerState::Running => None,
            PowerState::Rebuilding => Some((close::REBUILDING, "The service is being rebuilt")),
            _ => Some((close::STOPPED, "The service is no longer running")),
        },
        Ok(_) => Some((close::REMOVED, "The service was removed")),
        Err(e) => {
            tracing::warn!(error = %e, "console check: could not read the service");
            None
        }
    }
}

/// Sends a frame, giving up on a client that does not take it in time.
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

async fn close_with(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = send(socket, Message::Close(Some(frame))).await;
}

/// Carries one console between the client's WebSocket and the machine
/// until either side ends it or [`must_close`] says it must end.
pub async fn run(
    mut socket: WebSocket,
    mut console: ConsoleStream,
    ticket: ConsoleTicket,
    store: Arc<dyn Store>,
    slot: ConsoleSlot,
) {
    let mut checks = tokio::time::interval(CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.tick().await;
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let input = match frame {
                    Some(Ok(Message::Binary(bytes))) => ConsoleInput::Bytes(bytes.to_vec()),
                    Some(Ok(Message::Text(text))) => match parse_control(text.as_str()) {
                        Ok(input) => input,
                        Err(message) => {
                            let notice = serde_json::json!({"type": "error", "message": message});
                            if !send(&mut socket, Message::Text(notice.to_string().into())).await {
                                break;
                            }
                            continue;
                        }
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // The client closed or went away.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                if tokio::time::timeout(SEND_TIMEOUT, console.input.send(input)).await.is_err() {
                    close_with(&mut socket, close::UNAVAILABLE, "The console stopped answering").await;
                    break;
                }
            }
            output = console.output.recv() => match output {
                Some(bytes) => {
                    if !send(&mut socket, Message::Binary(bytes.into())).await {
                        break;
                    }
                }
                None => {
                    close_with(&mut socket, close::ENDED, "The console ended").await;
                    break;
                }
            },
            _ = checks.tick() => {
                if let Some((code, reason)) = must_close(store.as_ref(), &ticket).await {
                    tracing::info!(service = %ticket.service_id, code, reason, "console closed");
                    close_with(&mut socket, code, reason).await;
                    break;
                }
            }
        }
    }
    drop(slot);
}

/// What the simulated console knows of its service.
pub struct SimulatedMachine {
    pub service_id: String,
    pub os_name: Option<String>,
    /// When the service last started, Unix milliseconds.
    pub started_at: Option<i64>,
}

/// A simulated console for a sandbox service: a small line shell.
pub fn simulated(machine: SimulatedMachine, size: TerminalSize) -> ConsoleStream {
    let (input_tx, mut input_rx) = mpsc::channel::<ConsoleInput>(64);
    let (output_tx, output_rx) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        let mut shell = SimulatedShell::new(machine, size);
        if output_tx.send(shell.banner()).await.is_err() {
            return;
        }
        while let Some(input) = input_rx.recv().await {
            match input {
                ConsoleInput::Resize(size) => shell.size = size,
                ConsoleInput::Bytes(bytes) => {
                    let (out, exited) = shell.feed(&bytes, time::now_millis());
                    if !out.is_empty() && output_tx.send(out).await.is_err() {
                        return;
                    }
                    if exited {
                        return;
                    }
                }
            }
        }
    });
    ConsoleStream {
        input: input_tx,
        output: output_rx,
    }
}

/// Longest line the simulated shell keeps.
const MAX_LINE: usize = 4096;

/// The simulated shell: echoes what is typed as a terminal's line
/// discipline would, and answers a few commands when Enter is pressed.
struct SimulatedShell {
    machine: SimulatedMachine,
    host: String,
    size: TerminalSize,
    line: Vec<u8>,
    /// The last byte was a carriage return (so a following line feed is
    /// the same Enter).
    after_cr: bool,
    /// Inside an escape sequence (arrow keys and the like), which is ignored.
    escape: Escape,
}

#[derive(PartialEq, Eq)]
enum Escape {
    None,
    Started,
    Csi,
}

impl SimulatedShell {
    fn new(machine: SimulatedMachine, size: TerminalSize) -> SimulatedShell {
        let host = machine.service_id.to_ascii_lowercase().replace('_', "-");
        SimulatedShell {
            machine,
            host,
            size,
            line: Vec::new(),
            after_cr: false,
            escape: Escape::None,
        }
    }

    fn prompt(&self) -> String {
        format!("root@{}:~# ", self.host)
    }

    fn banner(&self) -> Vec<u8> {
        format!(
            "advps sandbox console for {}\r\n\
             This console is simulated: no machine runs behind it. Type 'help' for the commands it answers.\r\n\r\n{}",
            self.machine.service_id,
            self.prompt()
        )
        .into_bytes()
    }

    /// Takes typed bytes; returns what the terminal shows and whether the
    /// shell exited.
    fn feed(&mut self, bytes: &[u8], now_ms: i64) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match self.escape {
                Escape::Started => {
                    self.escape = if b == b'[' { Escape::Csi } else { Escape::None };
                    continue;
                }
                Escape::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = Escape::None;
                    }
                    continue;
                }
                Escape::None => {}
            }
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    let line =
                        String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
                    let (answer, exited) = self.run(line.trim(), now_ms);
                    out.extend_from_slice(answer.as_bytes());
                    if exited {
                        return (out, true);
                    }
                    out.extend_from_slice(self.prompt().as_bytes());
                }
                0x7f | 0x08 => {
                    if !self.line.is_empty() {
                        // One character, however many bytes it took.
                        while self.line.pop().is_some_and(|c| c & 0xc0 == 0x80) {}
                        out.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x03 => {
                    self.line.clear();
                    out.extend_from_slice(b"^C\r\n");
                    out.extend_from_slice(self.prompt().as_bytes());
                }
                0x04 if self.line.is_empty() => {
                    out.extend_from_slice(b"logout\r\n");
                    return (out, true);
                }
                0x1b => self.escape = Escape::Started,
                b if b < 0x20 => {}
                b => {
                    if self.line.len() < MAX_LINE {
                        self.line.push(b);
                        out.push(b);
                    }
                }
            }
        }
        (out, false)
    }

    /// Runs one command line; returns its output and whether it exits.
    fn run(&self, line: &str, now_ms: i64) -> (String, bool) {
        let mut words = line.split_whitespace();
        let Some(command) = words.next() else {
            return (String::new(), false);
        };
        let args: Vec<&str> = words.collect();
        let answer = match command {
            "help" => "This console is simulated (a sandbox service has no machine behind it).\r\n\
                       Commands: help, echo TEXT, uname [-a], uptime, stty size, exit\r\n"
                .to_string(),
            "echo" => format!("{}\r\n", args.join(" ")),
            "uname" if args.contains(&"-a") => format!(
                "Linux {} 6.1.0-advps-sandbox #1 SMP x86_64 GNU/Linux (simulated)\r\n",
                self.host
            ),
            "uname" => "Linux\r\n".to_string(),
            "uptime" => {
                let secs = self
                    .machine
                    .started_at
                    .map(|at| ((now_ms - at) / 1000).max(0))
                    .unwrap_or(0);
                format!(
                    " {} up {} min,  1 user,  load average: 0.00, 0.00, 0.00\r\n",
                    time::from_millis(now_ms).format("%H:%M:%S"),
                    secs / 60
                )
            }
            "stty" if args == ["size"] => format!("{} {}\r\n", self.size.rows, self.size.cols),
            "cat" if args == ["/etc/os-release"] => format!(
                "PRETTY_NAME=\"{} (simulated)\"\r\n",
                self.machine.os_name.as_deref().unwrap_or("Linux")
            ),
            "exit" | "logout" => return ("logout\r\n".to_string(), true),
            other => {
                format!("{other}: command not found (this console is simulated; type 'help')\r\n")
            }
        };
        (answer, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell() -> SimulatedShell {
        SimulatedShell::new(
            SimulatedMachine {
                service_id: "vps_service_1".into(),
                os_name: Some("Ubuntu 22.04".into()),
                started_at: Some(0),
            },
            DEFAULT_SIZE,
        )
    }

    fn typed(shell: &mut SimulatedShell, input: &str) -> String {
        String::from_utf8(shell.feed(input.as_bytes(), 120_000).0).unwrap()
    }

    #[test]
    fn echoes_and_answers() {
        let mut sh = shell();
        let out = typed(&mut sh, "echo hi\r\n");
        assert_eq!(out, "echo hi\r\nhi\r\nroot@vps-service-1:~# ");
        assert!(typed(&mut sh, "uptime\r").contains(" up 2 min"));
        assert!(typed(&mut sh, "nope\r").contains("nope: command not found"));
    }

    #[test]
    fn edits_lines_and_skips_escapes() {
        let mut sh = shell();
        let out = typed(&mut sh, "echo hé\x7fi\x1b[A\r");
        assert!(out.ends_with("\r\nhi\r\nroot@vps-service-1:~# "), "{out:?}");
    }

    #[test]
    fn reports_its_size_and_exits() {
        let mut sh = shell();
        sh.size = TerminalSize {
            cols: 132,
            rows: 43,
        };
        assert!(typed(&mut sh, "stty size\r").contains("43 132\r\n"));
        let (out, exited) = sh.feed(b"exit\r", 0);
        assert!(exited);
        assert!(String::from_utf8(out).unwrap().ends_with("logout\r\n"));
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            parse_control(r#"{"type":"resize","cols":100,"rows":30}"#).unwrap(),
            ConsoleInput::Resize(TerminalSize {
                cols: 100,
                rows: 30
            })
        );
        assert!(parse_control(r#"{"type":"resize","cols":0,"rows":30}"#).is_err());
        assert!(parse_control("ls\r").is_err());
        assert_eq!(
            parse_control(r#"{"type":"input","data":"ls\r"}"#).unwrap(),
            ConsoleInput::Bytes(b"ls\r".to_vec())
        );
    }

    #[test]
    fn initial_sizes() {
        let n = |v: &str| Some(v.to_string());
        assert_eq!(initial_size(None, None).unwrap(), DEFAULT_SIZE);
        assert_eq!(
            initial_size(n("132").as_ref(), n("43").as_ref()).unwrap(),
            TerminalSize {
                cols: 132,
                rows: 43
            }
        );
        assert!(initial_size(n("0").as_ref(), n("43").as_ref()).is_err());
        assert!(initial_size(n("132").as_ref(), None).is_err());
    }

    #[test]
    fn tickets() {
        let (secret, digest) = new_ticket();
        assert!(plausible_ticket(&secret));
        assert_eq!(digest, ticket_digest(&secret));
        assert_ne!(digest, secret);
        assert!(!plausible_ticket("short"));
    }

    #[test]
    fn slots_are_counted_and_given_back() {
        let consoles = Arc::new(Consoles::new(64));
        let slots: Vec<_> = (0..MAX_CONSOLES_PER_SERVICE)
            .map(|_| consoles.acquire(7).unwrap())
            .collect();
        assert_eq!(consoles.acquire(7).err(), Some(Full::Service));
        assert!(consoles.acquire(8).is_ok());
        drop(slots);
        assert_eq!(consoles.open_on(7), 0);
    }

    #[test]
    fn the_process_cap_counts_every_service() {
        let consoles = Arc::new(Consoles::new(4));
        let held: Vec<_> = (0..4).map(|pk| consoles.acquire(pk).unwrap()).collect();
        assert_eq!(consoles.acquire(9).err(), Some(Full::Process));
        assert_eq!(consoles.check(9), Err(Full::Process));
        drop(held);
        assert!(consoles.acquire(9).is_ok());
    }
}
