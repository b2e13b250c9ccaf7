import asyncio

import pytest

from conftest import API_KEY, sift_score
from sift_client import AsyncClient, Client, Code, ModelInfo, SiftError, TokenizedText

QUERY = "What is the capital of China?"
DOCS = ["The capital of China is Beijing.", "Gravity pulls objects toward the ground.", "",
        "Paris is the capital of France.", "A long document about many things. " * 40]


def test_sync_scores_equal_sift_score(server):
    expected = sift_score(QUERY, DOCS)
    with Client(server.endpoint) as client:
        response = client.rerank(QUERY, DOCS, input_order=True, return_documents=True)
    assert [r.index for r in response.results] == list(range(len(DOCS)))
    for got, want in zip(response.results, expected):
        assert got.logit == pytest.approx(want["logit"], abs=1e-6)
        assert got.relevance_score == pytest.approx(want["score"], abs=1e-6)
        assert got.tokens == want["tokens"] and got.input_tokens == want["input_tokens"]
        assert got.truncated == want["truncated"]
        assert got.document == (DOCS[got.index] or None)
    assert response.usage.documents == len(DOCS)
    assert response.model_id == "tiny-qwen3"


def test_sync_ranking_top_n_tokenize_info_health(server):
    with Client(server.endpoint) as client:
        ranked = client.rerank(QUERY, DOCS, top_n=2)
        everything = client.rerank(QUERY, DOCS, input_order=True)
        best = sorted(everything.results, key=lambda r: (-r.logit, r.index))[:2]
        assert [r.index for r in ranked.results] == [r.index for r in best]
        counts = client.tokenize(["Hello world", ""], return_ids=True)
        assert all(isinstance(c, TokenizedText) for c in counts)
        assert counts[0].count == len(counts[0].ids) > 0 and counts[1].count == 0 and counts[1].ids == []
        info = client.model_info()
        assert isinstance(info, ModelInfo)
        assert info.quantization == "int8" and info.protocol_version == 1 and info.model_id == "tiny-qwen3"
        assert info.default_instruction.startswith("Given a web search query")
        assert client.health().serving


def test_instruction_unset_empty_and_given_score_as_sift_score_does(server):
    with Client(server.endpoint) as client:
        for instruction, extra in [(None, ()), ("", ("--instruction", "")), ("Find facts", ("--instruction", "Find facts"))]:
            expected = sift_score(QUERY, DOCS[:2], *extra)
            got = client.rerank(QUERY, DOCS[:2], instruction=instruction, input_order=True).results
            assert [r.logit for r in got] == pytest.approx([e["logit"] for e in expected], abs=1e-6), instruction
        default = client.rerank(QUERY, DOCS[:1], instruction=None).results[0].logit
        empty = client.rerank(QUERY, DOCS[:1], instruction="").results[0].logit
        assert default != empty


def test_chunk_long_documents(server):
    long_doc = "Beijing is the capital of China. " + "Unrelated filler words go here. " * 60
    with Client(server.endpoint) as client:
        whole = client.rerank(QUERY, [long_doc], max_length=96).results[0]
        chunked = client.rerank(QUERY, [long_doc], max_length=96, chunk_long_documents=True,
                                chunk_overlap_tokens=8).results[0]
    assert whole.truncated and whole.windows == 1
    assert not chunked.truncated and chunked.windows > 1 and 0 <= chunked.window < chunked.windows
    # The best window scores at least as well as the first one, which is what truncation keeps.
    assert chunked.logit >= whole.logit - 1e-4, (chunked, whole)


def test_errors_carry_the_status_code(server):
    with Client(server.endpoint) as client:
        with pytest.raises(SiftError) as error:
            client.rerank("", ["d"])
        assert error.value.code == Code.INVALID_ARGUMENT and "query is empty" in error.value.message
        with pytest.raises(SiftError) as error:
            client.rerank("q", ["word " * 3000] * 32, timeout=0.001)
        assert error.value.code == Code.DEADLINE_EXCEEDED
        # A call larger than one call's share of the queue is refused at once, saying what to do.
        with pytest.raises(SiftError) as error:
            client.rerank("q", ["word " * 3000] * 64)
        assert error.value.code == Code.INVALID_ARGUMENT and "split it" in error.value.message
        # The connection is still good.
        assert len(client.rerank("q", ["d"]).results) == 1
    with pytest.raises(SiftError) as error:
        Client("127.0.0.1:1", max_attempts=2).rerank("q", ["d"])
    assert error.value.code == Code.UNAVAILABLE


def test_model_routing_and_the_score_cache(two_models):
    docs = ["The capital of China is Beijing.", "Gravity pulls.", "Paris is in France."]
    with Client(two_models.endpoint) as c:
        info = c.model_info(model="rerank-v3.5")
        assert info.model_id == "large"
        assert [m.name for m in info.models] == ["small", "large"]
        assert info.models[1].aliases == ["rerank-v3.5"] and info.models[0].is_default
        first = c.rerank("capital of China?", docs, model="rerank-v3.5")
        assert first.model_id == "large" and first.usage.cached_documents == 0
        again = c.rerank("capital of China?", docs, model="large")
        assert again.usage.cached_documents == len(docs)
        assert [r.logit for r in again.results] == [r.logit for r in first.results]
        default = c.rerank("capital of China?", docs)
        assert default.model_id == "small" and default.usage.cached_documents == 0
        assert c.tokenize(["Beijing"], model="large")[0].count > 0
        with pytest.raises(SiftError) as missing:
            c.rerank("q", docs, model="rerank-english-v3.0")
        assert missing.value.code == Code.NOT_FOUND
        assert "small (default), large" in missing.value.message


async def _async_model(endpoint):
    async with AsyncClient(endpoint) as c:
        r = await c.rerank("q", ["d"], model="large")
        info = await c.model_info()
        return r.model_id, info.model_id


def test_asyncio_names_a_model_too(two_models):
    assert asyncio.run(_async_model(two_models.endpoint)) == ("large", "small")


def test_api_key(secured_server):
    with pytest.raises(SiftError) as error:
        Client(secured_server.endpoint).rerank("q", ["d"])
    assert error.value.code == Code.UNAUTHENTICATED
    with Client(secured_server.endpoint, api_key=API_KEY) as client:
        assert len(client.rerank("q", ["d"]).results) == 1


def test_asyncio_many_calls_one_connection(server):
    expected = sift_score(QUERY, DOCS)

    async def main():
        async with AsyncClient(server.endpoint) as client:
            responses = await asyncio.gather(*(client.rerank(QUERY, DOCS, input_order=True) for _ in range(20)))
            for response in responses:
                assert [r.logit for r in response.results] == pytest.approx([e["logit"] for e in expected], abs=1e-6)
            seen = []
            streamed = await client.rerank(QUERY, DOCS, on_partial=lambda rs: seen.extend(r.index for r in rs))
            assert sorted(seen) == sorted(r.index for r in streamed.results)
            with pytest.raises(SiftError) as error:
                await client.rerank("q", ["d"] * 5000)
            assert error.value.code == Code.INVALID_ARGUMENT
            assert (await client.health()).serving

    asyncio.run(main())


def test_asyncio_cancellation_stops_the_work(server):
    async def main():
        async with AsyncClient(server.endpoint) as client:
            # ~80k tokens: seconds of work, inside one call's share of the queue (--max-request-tokens).
            task = asyncio.ensure_future(client.rerank("q", ["word%d " % i * 300 for i in range(120)]))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The server drops the cancelled call: the engine is soon idle again.
            for _ in range(200):
                if (await client.health()).active_requests == 0:
                    break
                await asyncio.sleep(0.05)
            assert (await client.health()).active_requests == 0

    asyncio.run(main())


def test_tls(tls_server):
    import ssl
    server, ca = tls_server
    context = ssl.create_default_context(cafile=ca)
    with Client(server.endpoint, ssl_context=context) as client:
        assert len(client.rerank("q", ["d"]).results) == 1

    async def main():
        async with AsyncClient(server.endpoint, ssl_context=context) as client:
            assert (await client.health()).serving

    asyncio.run(main())
    with pytest.raises(SiftError):
        Client(server.endpoint, ssl_context=ssl.create_default_context(), max_attempts=1).rerank("q", ["d"])
