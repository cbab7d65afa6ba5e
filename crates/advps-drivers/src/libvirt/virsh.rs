//! Talking to libvirt through its own command-line client, `virsh`.
//!
//! Every call is one `virsh -c URI ...` child process driven by tokio (the
//! async runtime threads never block on it), killed when its deadline
//! passes. virsh speaks libvirt's remote protocol for advps, over the local
//! socket, SSH or TLS, so advps needs no C library at build time.
//!
//! Calls that carry a secret (a root password for the guest agent) never put
//! it on a command line, where any local user could read it in
//! `/proc/PID/cmdline`: they are written to virsh's standard input, which
//! virsh reads as a script of commands.
//!
//! virsh's failures are sorted into [`DriverError`]s by their message: no
//! connection is [`DriverError::Unreachable`] ("the hypervisor did not
//! answer"), an unknown domain [`DriverError::NotFound`], a guest agent that
//! is absent or silent [`AgentError`] through [`is_agent_failure`].

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::{DriverError, DriverResult};

/// How long one ordinary virsh call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the guest agent gets to answer one command.
pub const AGENT_TIMEOUT_SECS: u64 = 5;

/// A libvirt connection, as a URI for virsh.
#[derive(Debug, Clone)]
pub struct Virsh {
    uri: String,
    program: PathBuf,
    timeout: Duration,
}

/// What a guest command printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Whether a driver error says that the guest agent is missing or silent
/// (as opposed to the hypervisor itself).
pub fn is_agent_failure(error: &DriverError) -> bool {
    match error {
        DriverError::Engine(message) => message.starts_with(AGENT_PREFIX),
        _ => false,
    }
}

const AGENT_PREFIX: &str = "the guest agent does not answer";

/// Sorts a virsh error message into a driver error.
pub fn classify(stderr: &str) -> DriverError {
    let message = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("error: ").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let lower = message.to_ascii_lowercase();
    if lower.contains("failed to connect to the hypervisor")
        || lower.contains("failed to connect socket")
        || lower.contains("cannot recv data")
        || lower.contains("end of file while reading data")
        || lower.contains("no connection driver available")
        || lower.contains("cannot write data")
    {
        DriverError::Unreachable(format!("the hypervisor did not answer: {message}"))
    } else if lower.contains("domain not found")
        || lower.contains("failed to get domain")
        || lower.contains("no domain with matching")
    {
        DriverError::NotFound
    } else if lower.contains("guest agent is not")
        || lower.contains("qemu guest agent is not")
        || lower.contains("guest agent command failed")
        || lower.contains("unable to execute qemu agent command")
        || lower.contains("agent is not connected")
        || lower.contains("agent response")
        || lower.contains("guest agent not available")
    {
        DriverError::Engine(format!("{AGENT_PREFIX} ({message})"))
    } else if lower.contains("domain is not running") {
        DriverError::NotRunning
    } else if lower.contains("domain is already active") || lower.contains("already running") {
        DriverError::AlreadyRunning
    } else {
        DriverError::Engine(message)
    }
}

/// Quotes one word for virsh's own command parser (used for the script on
/// standard input): single quotes, with none inside.
fn quote_word(word: &str) -> DriverResult<String> {
    if word.contains(['\'', '\n', '\r']) {
        return Err(DriverError::Engine(
            "a value for the hypervisor holds a quote or a line break".into(),
        ));
    }
    Ok(format!("'{word}'"))
}

impl Virsh {
    pub fn new(uri: &str) -> Virsh {
        Virsh {
            uri: uri.to_string(),
            program: PathBuf::from(
                std::env::var_os("ADVPS_VIRSH").unwrap_or_else(|| "virsh".into()),
            ),
            timeout: CALL_TIMEOUT,
        }
    }

    /// The same connection with another per-call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Virsh {
        self.timeout = timeout;
        self
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The virsh program (`ADVPS_VIRSH`, else `virsh` on the PATH).
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg("-q")
            .arg("-c")
            .arg(&self.uri)
            .env("LC_ALL", "C")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `virsh ARGS` and returns what it printed.
    pub async fn run(&self, args: &[&str]) -> DriverResult<String> {
        self.run_within(args, self.timeout).await
    }

    /// [`Virsh::run`] with its own deadline.
    pub async fn run_within(&self, args: &[&str], timeout: Duration) -> DriverResult<String> {
        let mut command = self.command();
        command.args(args).stdin(Stdio::null());
        let what = args.first().copied().unwrap_or("virsh");
        let output = self.finish(command, None, what, timeout).await?;
        if output.0 {
            Ok(output.1)
        } else {
            Err(classify(&output.2))
        }
    }

    /// Runs one virsh command given as a script on standard input, so that
    /// its words (a password) are on no command line. virsh's script mode
    /// always exits 0, so an error is what it printed on stderr.
    pub async fn run_secret(&self, words: &[&str], timeout: Duration) -> DriverResult<String> {
        let mut line = String::new();
        for word in words {
            line.push_str(&quote_word(word)?);
            line.push(' ');
        }
        line.push('\n');
        let mut command = self.command();
        command.stdin(Stdio::piped());
        let what = words.first().copied().unwrap_or("virsh");
        let (_, stdout, stderr) = self.finish(command, Some(line), what, timeout).await?;
        if stderr.lines().any(|l| l.trim_start().starts_with("error:")) {
            return Err(classify(&stderr));
        }
        // The script mode echoes a prompt per command; the answer is the rest.
        Ok(stdout
            .lines()
            .filter(|l| !l.starts_with("virsh #"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    async fn finish(
        &self,
        mut command: Command,
        stdin: Option<String>,
        what: &str,
        timeout: Duration,
    ) -> DriverResult<(bool, String, String)> {
        let mut child = command.spawn().map_err(|e| {
            DriverError::Unreachable(format!(
                "cannot run {} (the libvirt client, package libvirt-clients): {e}",
                self.program.display()
            ))
        })?;
        let run = async {
            if let Some(input) = stdin {
                if let Some(mut pipe) = child.stdin.take() {
                    pipe.write_all(input.as_bytes()).await?;
                    pipe.shutdown().await?;
                }
            }
            child.wait_with_output().await
        };
        match tokio::time::timeout(timeout, run).await {
            Err(_) => Err(DriverError::Timeout(format!(
                "virsh {what} did not finish within {} s",
                timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(DriverError::Unreachable(format!("virsh {what}: {e}"))),
            Ok(Ok(output)) => Ok((
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )),
        }
    }

    /// Sends one command to the domain's guest agent and returns its
    /// `return` value.
    pub async fn agent(&self, domain: &str, command: &Value) -> DriverResult<Value> {
        self.agent_within(domain, command, AGENT_TIMEOUT_SECS).await
    }

    /// [`Virsh::agent`] with its own wait for the agent's answer, in seconds.
    pub async fn agent_within(
        &self,
        domain: &str,
        command: &Value,
        agent_secs: u64,
    ) -> DriverResult<Value> {
        let timeout = agent_secs.to_string();
        let text = command.to_string();
        let out = self
            .run_within(
                &["qemu-agent-command", domain, "--timeout", &timeout, &text],
                Duration::from_secs(agent_secs + 10),
            )
            .await?;
        agent_return(&out)
    }

    /// [`Virsh::agent`] for a command that holds a secret.
    pub async fn agent_secret(&self, domain: &str, command: &Value) -> DriverResult<Value> {
        let timeout = AGENT_TIMEOUT_SECS.to_string();
        // No single quote can reach virsh's parser: JSON lets it be escaped.
        let text = command.to_string().replace('\'', "\\u0027");
        let out = self
            .run_secret(
                &["qemu-agent-command", domain, "--timeout", &timeout, &text],
                Duration::from_secs(AGENT_TIMEOUT_SECS + 10),
            )
            .await?;
        agent_return(&out)
    }

    /// Runs a program in the guest through the agent and waits for it,
    /// feeding `input` on its standard input (scripts and values travel
    /// there, not on command lines).
    pub async fn guest_exec(
        &self,
        domain: &str,
        path: &str,
        args: &[&str],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> DriverResult<ExecOutput> {
        let mut arguments = json!({ "path": path, "arg": args, "capture-output": true });
        if let Some(input) = input {
            arguments["input-data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(input));
        }
        let started = self
            .agent(
                domain,
                &json!({ "execute": "guest-exec", "arguments": arguments }),
            )
            .await?;
        let pid = started
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| DriverError::Engine(format!("guest-exec gave no pid: {started}")))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let status = self
                .agent(
                    domain,
                    &json!({ "execute": "guest-exec-status", "arguments": { "pid": pid } }),
                )
                .await?;
            if status.get("exited").and_then(Value::as_bool) == Some(true) {
                let decode = |key: &str| {
                    status
                        .get(key)
                        .and_then(Value::as_str)
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                };
                return Ok(ExecOutput {
                    exit_code: status
                        .get("exitcode")
                        .and_then(Value::as_i64)
                        .or_else(|| {
                            status
                                .get("signal")
                                .and_then(Value::as_i64)
                                .map(|s| 128 + s)
                        })
                        .unwrap_or(-1),
                    stdout: decode("out-data"),
                    stderr: decode("err-data"),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DriverError::Timeout(format!(
                    "{path} in the guest did not finish within {} s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// The `return` member of a guest agent's answer.
fn agent_return(out: &str) -> DriverResult<Value> {
    let line = out.lines().rev().find(|l| l.trim_start().starts_with('{'));
    let parsed: Value = line
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| DriverError::Engine(format!("{AGENT_PREFIX} (unreadable answer)")))?;
    if let Some(error) = parsed.get("error") {
        return Err(DriverError::Engine(format!(
            "the guest agent refused: {}",
            error
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
        )));
    }
    Ok(parsed.get("return").cloned().unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_their_message() {
        let down = classify(
            "error: failed to connect to the hypervisor\nerror: Failed to connect socket to \
             '/var/run/libvirt/libvirt-sock': No such file or directory\n",
        );
        assert!(
            matches!(&down, DriverError::Unreachable(m) if m.starts_with("the hypervisor did not answer")),
            "{down:?}"
        );
        assert_eq!(
            classify("error: failed to get domain 'nope'\n"),
            DriverError::NotFound
        );
        let agent =
            classify("error: Guest agent is not responding: QEMU guest agent is not connected");
        assert!(is_agent_failure(&agent), "{agent:?}");
        assert_eq!(
            classify("error: Failed to start domain 'x'\nerror: Requested operation is not valid: domain is already active"),
            DriverError::AlreadyRunning
        );
        assert_eq!(
            classify("error: Requested operation is not valid: domain is not running"),
            DriverError::NotRunning
        );
        assert!(!is_agent_failure(&DriverError::NotRunning));
    }

    #[test]
    fn agent_answers_are_unwrapped() {
        assert_eq!(
            agent_return("{\"return\":{\"pid\":7}}\n").unwrap(),
            json!({"pid": 7})
        );
        assert!(agent_return("virsh # \n").is_err());
        assert!(matches!(
            agent_return("{\"error\":{\"class\":\"GenericError\",\"desc\":\"no\"}}"),
            Err(DriverError::Engine(m)) if m.contains("no")
        ));
    }

    #[test]
    fn script_words_cannot_break_out() {
        assert_eq!(quote_word("a b").unwrap(), "'a b'");
        assert!(quote_word("a'b").is_err());
        assert!(quote_word("a\nb").is_err());
    }
}
