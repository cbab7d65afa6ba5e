"""sdk/codegen.py on a document with operations it has no name for yet:
they are named by the rule and get their page iterators, so a regenerated
client picks up new endpoints without touching the generator."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SDK = Path(__file__).resolve().parent.parent.parent


def load_codegen() -> Any:
    spec = importlib.util.spec_from_file_location("codegen", SDK / "codegen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rule_names() -> None:
    codegen = load_codegen()
    assert codegen.rule_name("listServices", "/api/v1/services") == "services.list"
    assert codegen.rule_name("getServiceMetrics", "/api/v1/services/{serviceId}/metrics") == "services.metrics"
    assert codegen.rule_name("getUsage", "/api/v1/usage") == "usage.get"
    assert codegen.rule_name("openConsole", "/api/v1/services/{serviceId}/console") == "services.openConsole"


def test_a_new_paginated_list_gets_a_method_and_an_iterator(tmp_path: Path) -> None:
    doc = json.loads((SDK / "openapi.json").read_text())
    new = copy.deepcopy(doc["paths"]["/api/v1/audit"]["get"])
    new["operationId"] = "listServices"
    doc["paths"]["/api/v1/services"] = {"get": new}
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    subprocess.run(
        [sys.executable, str(SDK / "codegen.py"), "--doc", str(tmp_path / "doc.json"), "--out", str(tmp_path)],
        check=True,
    )
    js = (tmp_path / "typescript/src/generated/operations.js").read_text()
    assert '{ operationId: "listServices", name: "services.list"' in js
    assert "listAll: (query, options)" in js
    py = (tmp_path / "python/src/advps/_operations.py").read_text()
    assert "    def list_all(" in py and '("listServices", "services.list", "GET", "/api/v1/services")' in py
    # What is generated from the checked-in document is what is checked in.
    subprocess.run([sys.executable, str(SDK / "codegen.py"), "--out", str(tmp_path / "same")], check=True)
    for rel in ("typescript/src/generated/operations.js", "python/src/advps/_operations.py"):
        assert (tmp_path / "same" / rel).read_text() == (SDK / rel).read_text()
