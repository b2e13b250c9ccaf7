"""Third-party rerank clients, unchanged, against `sift serve --model DIR` with default flags.

Each client sends its vendor's model name (none can leave it out) and reads its vendor's response
shape. A server with one model answers every name with it, so each must work as it is, with the
ids, order and scores `sift score --precision int8` gives for the same query and documents.
"""
import json
import math
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIFT = Path(os.environ.get("SIFT_BIN", ROOT / ".build" / "debug" / "sift"))
TINY = Path(os.environ.get("SIFT_TINY_MODEL", ROOT.parent / "shared" / "fixtures" / "tiny-qwen3"))

QUERY = "What is the capital of the United States?"
DOCUMENTS = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. Its capital is Saipan.",
    "Washington, D.C. (also known as simply Washington or D.C.) is the capital of the United States.",
    "Capitalization in English grammar is the use of a capital letter at the start of a word.",
    "Capital punishment has existed in the United States since before it was a country.",
]


@pytest.fixture(scope="module")
def server():
    """`sift serve --model DIR` with default flags (ports picked by the server)."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    process = subprocess.Popen([str(SIFT), "serve", "--model", str(TINY), "--port", "0", "--http-port", "0"],
                               stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 120
    while time.time() < deadline:
        text = Path(log.name).read_text()
        match = re.search(r"http=http://127\.0\.0\.1:(\d+)/", text)
        if match and "loaded; serving" in text:
            yield f"http://127.0.0.1:{match.group(1)}"
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"sift serve did not start:\n{Path(log.name).read_text()}")


@pytest.fixture(scope="module")
def expected():
    """What `sift score --precision int8` gives: index → probability, best first."""
    lines = "".join(json.dumps({"text": d}) + "\n" for d in DOCUMENTS)
    out = subprocess.run([str(SIFT), "score", "--model", str(TINY), "--precision", "int8", "--query", QUERY],
                         input=lines, capture_output=True, text=True, check=True).stdout
    results = json.loads(out)["results"]
    ranked = sorted(results, key=lambda r: (-r["logit"], r["index"]))
    return [(r["index"], 1 / (1 + math.exp(-r["logit"]))) for r in ranked]


def check(got, expected, top_n=None):
    """`got`: (index, score) best first, as the client returned them."""
    want = expected[:top_n] if top_n else expected
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, score), (_, reference) in zip(got, want):
        assert score == pytest.approx(reference, abs=1e-6)


def test_cohere_sdk_v2_and_v1(server, expected):
    import cohere
    v2 = cohere.ClientV2(api_key="unused", base_url=server)
    r = v2.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS, top_n=3)
    check([(x.index, x.relevance_score) for x in r.results], expected, top_n=3)
    v1 = cohere.Client(api_key="unused", base_url=server)
    r = v1.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCUMENTS)
    check([(x.index, x.relevance_score) for x in r.results], expected)


def test_langchain_cohere_rerank(server, expected):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document
    reranker = CohereRerank(base_url=server, cohere_api_key="unused", model="rerank-v3.5", top_n=4)
    docs = reranker.compress_documents([Document(page_content=d) for d in DOCUMENTS], QUERY)
    got = [(DOCUMENTS.index(d.page_content), d.metadata["relevance_score"]) for d in docs]
    check(got, expected, top_n=4)


def test_langchain_community_jina_rerank(server, expected):
    from langchain_community.document_compressors import jina_rerank
    jina_rerank.JINA_API_URL = server + "/v1/rerank"  # the only way to point it elsewhere
    reranker = jina_rerank.JinaRerank(jina_api_key="unused", top_n=5)
    results = reranker.rerank(DOCUMENTS, QUERY)
    check([(r["index"], r["relevance_score"]) for r in results], expected)


@pytest.mark.parametrize("provider,path,model", [("cohere", "/v1/rerank", "rerank-english-v3.0"),
                                                  ("jina", "/v1/rerank", "jina-reranker-v1-base-en"),
                                                  ("text-embeddings-inference", "/rerank", "BAAI/bge-reranker-base")])
def test_rerankers_api_routes(server, expected, provider, path, model):
    from rerankers import Reranker
    ranker = Reranker(model, model_type="APIRanker", api_key="unused", api_provider=provider, url=server + path, verbose=0)
    results = ranker.rank(QUERY, DOCUMENTS)
    check([(r.document.doc_id, r.score) for r in results.results], expected)


def test_errors_carry_detail_for_jina_style_clients(server):
    import requests
    r = requests.post(server + "/v1/rerank", json={"model": "jina-reranker-v2", "query": "", "documents": ["a"]})
    assert r.status_code == 400
    body = r.json()
    assert body["detail"] == body["message"] and "query" in body["detail"]


def test_huggingface_hub_endpoint_info(server):
    from huggingface_hub import InferenceClient
    info = InferenceClient(model=server, provider="hf-inference").get_endpoint_info()
    assert info["model_type"] == {"reranker": {"id2label": {"0": "yes"}, "label2id": {"yes": 0}}}
    assert info["max_input_length"] > 0 and info["max_client_batch_size"] == 1000
    assert info["model_id"] == "tiny-qwen3" and info["version"]
