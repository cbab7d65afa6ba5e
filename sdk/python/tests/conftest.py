"""Starts the real ``advps`` binary for the tests: a random port, a fresh
data directory, short sandbox timings, and the printed test key. The binary
is $ADVPS_BIN, by default ../../target/debug/advps from this package."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

HERE = Path(__file__).resolve().parent
ADVPS_BIN = Path(os.environ.get("ADVPS_BIN") or HERE.parent.parent.parent / "target" / "debug" / "advps").resolve()


class Server:
    def __init__(self, env: Dict[str, str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="advps-sdk-py-")
        self.out = open(os.path.join(self.dir, "stdout"), "w+")
        self.err = open(os.path.join(self.dir, "stderr"), "w+")
        full_env = {
            **os.environ,
            "ADVPS_SANDBOX_TASK_SECONDS": "1",
            "ADVPS_SANDBOX_PROVISION_SECONDS": "1",
            "ADVPS_WEBHOOK_ALLOW_PRIVATE": "true",
            "ADVPS_WEBHOOK_RETRY_BASE_MS": "200",
            **env,
        }
        self.proc = subprocess.Popen(
            [str(ADVPS_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.dir, "data")],
            stdout=self.out,
            stderr=self.err,
            env=full_env,
        )
        deadline = time.monotonic() + 30
        while True:
            text = Path(self.out.name).read_text()
            url = re.search(r"Listening on (http://[0-9.:]+)", text)
            key = re.search(r"^(sk_test_[A-Za-z0-9]{32})$", text, re.M)
            if url and key:
                self.base_url, self.api_key = url.group(1), key.group(1)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"advps did not start:\n{text}\n{Path(self.err.name).read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server({})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def limited_server() -> Iterator[Server]:
    """Three requests per two-second window."""
    s = Server({"ADVPS_RATE_LIMIT_TEST": "3", "ADVPS_RATE_LIMIT_WINDOW_SECS": "2"})
    yield s
    s.stop()


class Receiver:
    """A local HTTP receiver that records what is POSTed to it."""

    def __init__(self) -> None:
        self.received: List[Dict[str, Any]] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.cond:
                    outer.received.append({"headers": dict(self.headers.items()), "body": body})
                    outer.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def next(self, match: Callable[[Dict[str, Any]], bool], timeout: float = 30) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for d in self.received:
                    if match(d):
                        return d
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching delivery in {timeout} s (got {len(self.received)})")
                self.cond.wait(left)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def task_of(delivery: Dict[str, Any]) -> Any:
    return json.loads(delivery["body"]).get("data", {}).get("taskId")
