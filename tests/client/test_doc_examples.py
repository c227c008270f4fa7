"""The Python examples of README.md and docs/getting-started.md run as written against a live
server, so the documentation cannot drift from the client."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/getting-started.md"])
def test_python_examples_run(doc, live_server, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(ROOT / doc)
    assert blocks, f"{doc} has no Python example"
    # The examples read the demo's keys file and talk to the demo's address.
    (tmp_path / "demo-data").mkdir()
    (tmp_path / "demo-data" / "keys.json").write_text(json.dumps(live_server.keys))
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        code = block.replace("http://127.0.0.1:8000", live_server.base_url)
        exec(compile(code, doc, "exec"), {"SERVE_TOKEN": live_server.keys["serve"],
                                          "INGEST_TOKEN": live_server.keys["ingest"]})
    printed = capsys.readouterr().out
    if doc == "docs/getting-started.md":
        # What the example says it prints.
        assert "3 accepted, 0 duplicates" in printed
        assert "['events[0].type'] [0]" in printed
