"""asyncio client: one multiplexed connection; any number of calls in flight, answered out of order."""
from __future__ import annotations

import asyncio
import itertools
import ssl
from typing import Callable, Dict, List, Optional

from . import _wire as w
from . import sift_pb2 as pb


class AsyncClient:
    def __init__(self, endpoint: str = "127.0.0.1:7700", api_key: Optional[str] = None,
                 connect_timeout: float = 5.0, max_attempts: int = 5,
                 max_frame_bytes: int = w.DEFAULT_MAX_FRAME_BYTES, ssl_context: Optional[ssl.SSLContext] = None):
        """ssl_context: TLS (e.g. ssl.create_default_context(cafile=...)); None: plain TCP."""
        self.host, self.port = w.parse_endpoint(endpoint)
        self.api_key = api_key
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.max_attempts = max(1, max_attempts)
        self.max_frame_bytes = max_frame_bytes
        self._writer: Optional[asyncio.StreamWriter] = None
        self._reader_task: Optional[asyncio.Task] = None
        self._pending: Dict[int, asyncio.Future] = {}
        self._partials: Dict[int, Callable] = {}
        self._ids = itertools.count(1)
        self._connecting = asyncio.Lock()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None

    # -- calls ---------------------------------------------------------------------------------

    async def rerank(self, query: str, documents: List[str], *, model: Optional[str] = None, instruction: Optional[str] = None,
                     top_n: Optional[int] = None, return_documents: bool = False,
                     max_tokens_per_document: Optional[int] = None, max_length: Optional[int] = None,
                     input_order: bool = False, timeout: Optional[float] = None, priority: int = 0,
                     chunk_long_documents: bool = False, chunk_overlap_tokens: Optional[int] = None,
                     on_partial: Optional[Callable[[List[w.RerankResult]], None]] = None) -> w.RerankResponse:
        request = w.rerank_request(query, documents, instruction, top_n, return_documents, max_tokens_per_document,
                                   max_length, input_order, timeout, priority, stream=on_partial is not None,
                                   chunk_long_documents=chunk_long_documents, chunk_overlap_tokens=chunk_overlap_tokens,
                                   model=model)
        frame = await self._call(pb.Frame(rerank_request=request), on_partial)
        return w.rerank_response(w.check(frame, "rerank_response"))

    async def tokenize(self, texts: List[str], return_ids: bool = False, model: Optional[str] = None) -> List[w.TokenizedText]:
        frame = await self._call(pb.Frame(tokenize_request=pb.TokenizeRequest(texts=list(texts), return_ids=return_ids, model=model or "")))
        return w.tokenized(w.check(frame, "tokenize_response"))

    async def model_info(self, model: Optional[str] = None) -> w.ModelInfo:
        return w.model_info(w.check(await self._call(pb.Frame(model_info_request=pb.ModelInfoRequest(model=model or ""))), "model_info_response"))

    async def health(self) -> w.Health:
        h = w.check(await self._call(pb.Frame(health_request=pb.HealthRequest())), "health_response")
        return w.health(h)

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(self, frame: pb.Frame, on_partial=None) -> pb.Frame:
        if self.api_key:
            frame.metadata.add(key="authorization", value=f"Bearer {self.api_key}")
        delays = w.backoff_delays(self.max_attempts)
        last = None
        for _ in range(self.max_attempts):
            try:
                return await self._exchange(frame, on_partial)
            except w.SiftError as error:
                if error.code != w.Code.UNAVAILABLE:
                    raise
                last = error
                delay = next(delays, None)
                if delay is None:
                    break
                await asyncio.sleep(delay)
        raise w.SiftError(w.Code.UNAVAILABLE, f"gave up after {self.max_attempts} attempts: {last.message if last else ''}")

    async def _exchange(self, frame: pb.Frame, on_partial) -> pb.Frame:
        writer = await self._connect()
        request_id = next(self._ids)
        frame.request_id = request_id
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        if on_partial:
            self._partials[request_id] = on_partial
        try:
            writer.write(w.encode(frame))
            await writer.drain()
            return await future
        except asyncio.CancelledError:
            # Tell the server to stop the work; its CANCELLED answer will find no waiter.
            if self._writer is writer and not writer.is_closing():
                cancel = pb.Frame(request_id=next(self._ids), cancel_request=pb.CancelRequest(request_id=request_id))
                writer.write(w.encode(cancel))
            raise
        except (OSError, ConnectionError) as error:
            raise w.SiftError(w.Code.UNAVAILABLE, f"connection to {self.host}:{self.port} failed: {error}") from None
        finally:
            self._pending.pop(request_id, None)
            self._partials.pop(request_id, None)

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is None or self._writer.is_closing():
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(
                        self.host, self.port, ssl=self.ssl_context, server_hostname=self.host if self.ssl_context else None),
                                                            self.connect_timeout)
                except (OSError, asyncio.TimeoutError) as error:
                    raise w.SiftError(w.Code.UNAVAILABLE, f"cannot connect to {self.host}:{self.port}: {error}") from None
                self._writer = writer
                self._reader_task = asyncio.ensure_future(self._read_loop(reader, writer))
            return self._writer

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        error = w.SiftError(w.Code.UNAVAILABLE, "connection closed by the server")
        try:
            while True:
                (length,) = w.HEADER.unpack(await reader.readexactly(4))
                if length > self.max_frame_bytes:
                    error = w.SiftError(w.Code.INTERNAL, f"server sent a frame of {length} bytes")
                    break
                frame = pb.Frame()
                frame.ParseFromString(await reader.readexactly(length))
                if frame.WhichOneof("body") == "rerank_partial":
                    handler = self._partials.get(frame.request_id)
                    if handler:
                        handler([w.result(r) for r in frame.rerank_partial.results])
                    continue
                future = self._pending.get(frame.request_id)
                if future is not None and not future.done():
                    future.set_result(frame)
                elif frame.request_id == 0 and frame.WhichOneof("body") == "status":
                    code = w.Code(frame.status.code) if frame.status.code in w.Code._value2member_map_ else w.Code.UNKNOWN
                    error = w.SiftError(code, frame.status.message)
        except (asyncio.IncompleteReadError, OSError, ConnectionError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(error)
