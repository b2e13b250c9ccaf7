"""Starts a real `sift serve` (the tiny fixture model) on a free loopback port."""
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SIFT = Path(os.environ.get("SIFT_BIN", ROOT / ".build" / "debug" / "sift"))
TINY = Path(os.environ.get("SIFT_TINY_MODEL", ROOT.parent / "shared" / "fixtures" / "tiny-qwen3"))
API_KEY = "python-client-test-key-0123"


class Server:
    def __init__(self, *args, models=("--model", str(TINY))):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.process = subprocess.Popen([str(SIFT), "serve", *models, "--port", "0", "--threads", "2", *args],
                                        stdout=subprocess.DEVNULL, stderr=self.log)
        self.port = None
        deadline = time.time() + 120
        while time.time() < deadline:
            text = Path(self.log.name).read_text()
            match = re.search(r"address=127\.0\.0\.1:(\d+)", text)
            if match and "loaded; serving" in text:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sift serve did not start:\n{Path(self.log.name).read_text()}")

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def two_models():
    """The tiny model twice, as "small" (the default) and "large" (alias rerank-v3.5)."""
    s = Server(models=("--model", f"small={TINY}", "--model", f"large={TINY}", "--model-alias", "rerank-v3.5=large"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def secured_server(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text(f"# test key\n{API_KEY}\n")
    s = Server("--api-key-file", str(keys))
    yield s
    s.stop()


def sift_score(query, documents, *extra):
    """Scores in-process with `sift score` (int8, as the server runs)."""
    lines = "\n".join(json.dumps({"text": d}) for d in documents)
    out = subprocess.run([str(SIFT), "score", "--model", str(TINY), "--precision", "int8", "--query", query, *extra, "-"],
                         input=lines.encode(), capture_output=True, check=True)
    return json.loads(out.stdout)["results"]


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory):
    """A server with TLS; yields (server, CA file)."""
    d = tmp_path_factory.mktemp("tls")
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
        "-days", "2", "-extfile", "san.ext")
    s = Server("--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key"))
    yield s, str(d / "ca.pem")
    s.stop()
