"""The examples run against a fresh server as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_reseller_example_runs_the_whole_flow(server: Any) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "reseller.py")],
        env={**os.environ, "ADVPS_API_KEY": server.api_key, "ADVPS_BASE_URL": server.base_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "COMPLETED" in out.stdout.split("\n")[1]
    assert "rebuild COMPLETED" in out.stdout
    assert "webhook verified: task.completed" in out.stdout
