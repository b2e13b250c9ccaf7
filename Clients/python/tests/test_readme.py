"""The README's snippets, as written, against a real server (its port put in for 7700)."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def snippets():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_every_snippet_runs(server):
    assert len(snippets()) >= 2
    for code in snippets():
        code = code.replace("127.0.0.1:7700", server.endpoint)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{code}\n{done.stderr}"
        assert done.stdout.strip(), code
