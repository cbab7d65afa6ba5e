//! Connection hardening, seen from a raw TCP client: slow headers and slow
//! bodies are cut off at their deadlines, idle kept-alive connections are
//! closed, connections past the cap are refused, and a SIGTERM'd server
//! exits within its shutdown grace even with a request half sent.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Pause between two bytes of a slow client.
const DRIBBLE: Duration = Duration::from_millis(300);

fn connect(server: &TestServer) -> TcpStream {
    let addr = server.base_url.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DRIBBLE)).unwrap();
    stream
}

/// What a slow client saw: the bytes answered, and after how long the
/// server closed the connection (none: still open when the client gave up).
struct Seen {
    answer: String,
    closed_after: Option<Duration>,
}

/// Sends `head` at once, then `slow` one byte per [`DRIBBLE`], reading what
/// comes back all along, until the server closes or `give_up` has passed.
fn dribble(mut stream: TcpStream, head: &[u8], slow: &[u8], give_up: Duration) -> Seen {
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut slow = slow.iter();
    let mut write_failed = stream.write_all(head).is_err();
    let closed_after = loop {
        if start.elapsed() > give_up {
            break None;
        }
        if !write_failed {
            if let Some(byte) = slow.next() {
                write_failed = stream.write_all(&[*byte]).is_err();
            }
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break Some(start.elapsed()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break Some(start.elapsed()),
        }
    };
    Seen {
        answer: String::from_utf8_lossy(&answer).into_owned(),
        closed_after,
    }
}

/// Sends one whole request and reads until its answer has arrived.
fn get_livez(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nhost: advps\r\n\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answer = Vec::new();
    while Instant::now() < deadline {
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.ends_with(b"}") {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn slow_headers_are_cut_off() {
    let server = TestServer::start_with_env(&[("ADVPS_HEADER_READ_TIMEOUT_SECS", "1")]);
    let slow = format!("x-slow: {}\r\n\r\n", "a".repeat(200));
    let seen = dribble(
        connect(&server),
        b"GET /livez HTTP/1.1\r\nhost: advps\r\n",
        slow.as_bytes(),
        Duration::from_secs(8),
    );
    let closed = seen.closed_after.expect("slow headers held the connection");
    assert!(closed < Duration::from_secs(4), "closed after {closed:?}");
    assert!(!seen.answer.contains("200 OK"), "{}", seen.answer);
}

#[test]
fn slow_bodies_are_answered_408_and_closed() {
    let server = TestServer::start_with_env(&[("ADVPS_BODY_READ_TIMEOUT_SECS", "2")]);
    let head = format!(
        "POST /api/v1/services/vps_service_1/stop HTTP/1.1\r\nhost: advps\r\n\
         x-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{",
        server.test_key
    );
    let seen = dribble(
        connect(&server),
        head.as_bytes(),
        &[b' '; 999],
        Duration::from_secs(10),
    );
    let closed = seen.closed_after.expect("a slow body held the connection");
    assert!(closed < Duration::from_secs(6), "closed after {closed:?}");
    assert!(
        seen.answer.starts_with("HTTP/1.1 408"),
        "answer: {}",
        seen.answer
    );
    assert!(
        seen.answer
            .contains(r#""message":"Request body not received in time""#),
        "answer: {}",
        seen.answer
    );
    assert!(
        seen.answer.contains(r#""status":"error""#),
        "{}",
        seen.answer
    );
}

#[test]
fn idle_kept_alive_connections_are_closed() {
    let server = TestServer::start_with_env(&[
        ("ADVPS_IDLE_TIMEOUT_SECS", "1"),
        ("ADVPS_HEADER_READ_TIMEOUT_SECS", "60"),
    ]);
    let mut stream = connect(&server);
    let answer = get_livez(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Kept alive: a second request on the same connection is served.
    let answer = get_livez(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = dribble(stream, b"", b"", Duration::from_secs(8));
    let closed = seen.closed_after.expect("an idle connection stayed open");
    assert!(closed < Duration::from_secs(4), "closed after {closed:?}");
    assert!(
        closed >= Duration::from_millis(500),
        "closed after {closed:?}"
    );
}

#[test]
fn connections_past_the_cap_are_refused_with_503() {
    let server = TestServer::start_with_env(&[
        ("ADVPS_MAX_CONNECTIONS", "4"),
        ("ADVPS_IDLE_TIMEOUT_SECS", "60"),
        ("ADVPS_HEADER_READ_TIMEOUT_SECS", "60"),
    ]);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = connect(&server);
            let answer = get_livez(&mut stream);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            stream
        })
        .collect();
    let seen = dribble(
        connect(&server),
        b"GET /livez HTTP/1.1\r\nhost: advps\r\n\r\n",
        b"",
        Duration::from_secs(5),
    );
    assert!(
        seen.closed_after.is_some(),
        "a refused connection stayed open"
    );
    assert!(
        seen.answer.starts_with("HTTP/1.1 503"),
        "answer: {}",
        seen.answer
    );
    assert!(
        seen.answer
            .contains(r#""message":"Too many connections; retry later""#),
        "answer: {}",
        seen.answer
    );
    // The held connections are still served.
    let answer = get_livez(&mut held[0]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Closing one frees its place.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = get_livez(&mut connect(&server));
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_exits_within_the_grace_despite_half_sent_requests() {
    let mut server = TestServer::start_with_env(&[
        ("ADVPS_SHUTDOWN_GRACE_SECS", "2"),
        ("ADVPS_HEADER_READ_TIMEOUT_SECS", "60"),
        ("ADVPS_BODY_READ_TIMEOUT_SECS", "60"),
        ("ADVPS_IDLE_TIMEOUT_SECS", "60"),
    ]);
    let mut half_head = connect(&server);
    half_head
        .write_all(b"GET /livez HTTP/1.1\r\nhost: advps\r\n")
        .unwrap();
    let mut half_body = connect(&server);
    let head = format!(
        "POST /api/v1/services/vps_service_1/stop HTTP/1.1\r\nhost: advps\r\n\
         x-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{",
        server.test_key
    );
    half_body.write_all(head.as_bytes()).unwrap();
    // An idle kept-alive connection, which closes at once.
    let mut idle = connect(&server);
    assert!(get_livez(&mut idle).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let status = server.terminate();
    let took = start.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(6), "exited after {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "exited after {took:?}: the half-sent requests were not waited for"
    );
}

#[test]
fn the_metrics_listener_cuts_slow_headers_too() {
    let server = TestServer::start_with_env(&[
        ("ADVPS_HEADER_READ_TIMEOUT_SECS", "1"),
        ("ADVPS_METRICS_LISTEN", "127.0.0.1:0"),
    ]);
    let addr = server
        .startup_lines
        .iter()
        .find_map(|l| l.strip_prefix("Metrics on http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .expect("the metrics address among the startup lines")
        .to_string();
    let stream = TcpStream::connect(&addr).expect("connect to metrics");
    stream.set_read_timeout(Some(DRIBBLE)).unwrap();
    let slow = format!("x-slow: {}\r\n\r\n", "a".repeat(200));
    let seen = dribble(
        stream,
        b"GET /metrics HTTP/1.1\r\nhost: advps\r\n",
        slow.as_bytes(),
        Duration::from_secs(8),
    );
    let closed = seen
        .closed_after
        .expect("slow headers held the metrics connection");
    assert!(closed < Duration::from_secs(4), "closed after {closed:?}");
    assert!(!seen.answer.contains("200 OK"), "{}", seen.answer);
}
