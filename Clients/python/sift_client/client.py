"""Blocking client: one connection, one call at a time (thread-safe: calls take turns)."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Callable, List, Optional

from . import _wire as w
from . import sift_pb2 as pb


class Client:
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
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._next_id = 1

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- calls ---------------------------------------------------------------------------------

    def rerank(self, query: str, documents: List[str], *, model: Optional[str] = None, instruction: Optional[str] = None,
               top_n: Optional[int] = None, return_documents: bool = False,
               max_tokens_per_document: Optional[int] = None, max_length: Optional[int] = None,
               input_order: bool = False, timeout: Optional[float] = None, priority: int = 0,
               chunk_long_documents: bool = False, chunk_overlap_tokens: Optional[int] = None,
               on_partial: Optional[Callable[[List[w.RerankResult]], None]] = None) -> w.RerankResponse:
        """Scores documents against the query: best first (or in input order), cut to top_n.

        model: a name or alias the server serves (None: its default; unknown: SiftError NOT_FOUND).
        """
        request = w.rerank_request(query, documents, instruction, top_n, return_documents, max_tokens_per_document,
                                   max_length, input_order, timeout, priority, stream=on_partial is not None,
                                   chunk_long_documents=chunk_long_documents, chunk_overlap_tokens=chunk_overlap_tokens,
                                   model=model)
        frame = self._call(pb.Frame(rerank_request=request), timeout, on_partial)
        return w.rerank_response(w.check(frame, "rerank_response"))

    def tokenize(self, texts: List[str], return_ids: bool = False, model: Optional[str] = None) -> List[w.TokenizedText]:
        frame = self._call(pb.Frame(tokenize_request=pb.TokenizeRequest(texts=list(texts), return_ids=return_ids, model=model or "")), None)
        return w.tokenized(w.check(frame, "tokenize_response"))

    def model_info(self, model: Optional[str] = None) -> w.ModelInfo:
        return w.model_info(w.check(self._call(pb.Frame(model_info_request=pb.ModelInfoRequest(model=model or "")), None), "model_info_response"))

    def health(self) -> w.Health:
        h = w.check(self._call(pb.Frame(health_request=pb.HealthRequest()), None), "health_response")
        return w.health(h)

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, frame: pb.Frame, timeout: Optional[float], on_partial=None) -> pb.Frame:
        if self.api_key:
            frame.metadata.add(key="authorization", value=f"Bearer {self.api_key}")
        deadline = time.monotonic() + timeout if timeout else None
        last: Optional[w.SiftError] = None
        delays = w.backoff_delays(self.max_attempts)
        for attempt in range(self.max_attempts):
            try:
                with self._lock:
                    return self._exchange(frame, deadline, on_partial)
            except w.SiftError as error:
                if error.code != w.Code.UNAVAILABLE:
                    raise
                last = error
                delay = next(delays, None)
                if delay is None or (deadline and time.monotonic() + delay > deadline):
                    break
                time.sleep(delay)
        raise w.SiftError(w.Code.UNAVAILABLE, f"gave up after {self.max_attempts} attempts: {last.message if last else ''}")

    def _exchange(self, frame: pb.Frame, deadline: Optional[float], on_partial) -> pb.Frame:
        sock = self._connect()
        frame.request_id = self._next_id
        self._next_id += 1
        try:
            sock.sendall(w.encode(frame))
            while True:
                if deadline:
                    # The server enforces the deadline; this only guards against a dead peer.
                    sock.settimeout(max(0.1, deadline - time.monotonic() + 5.0))
                answer = self._read_frame(sock)
                if answer.request_id != frame.request_id:
                    if answer.request_id == 0 and answer.WhichOneof("body") == "status":
                        w.check(answer, "")  # a connection-level error: raise it
                    continue
                if answer.WhichOneof("body") == "rerank_partial":
                    if on_partial:
                        on_partial([w.result(r) for r in answer.rerank_partial.results])
                    continue
                return answer
        except (OSError, ConnectionError) as error:
            self._drop()
            raise w.SiftError(w.Code.UNAVAILABLE, f"connection to {self.host}:{self.port} failed: {error}") from None
        except w.SiftError:
            raise
        except BaseException:
            # Interrupted mid-call (KeyboardInterrupt): the stream position is unknown.
            self._drop()
            raise

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
                if self.ssl_context is not None:
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            except OSError as error:
                raise w.SiftError(w.Code.UNAVAILABLE, f"cannot connect to {self.host}:{self.port}: {error}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
            self._sock = sock
        return self._sock

    def _read_frame(self, sock: socket.socket) -> pb.Frame:
        (length,) = w.HEADER.unpack(self._read_exactly(sock, 4))
        if length > self.max_frame_bytes:
            raise ConnectionError(f"server sent a frame of {length} bytes (limit {self.max_frame_bytes})")
        frame = pb.Frame()
        frame.ParseFromString(self._read_exactly(sock, length))
        return frame

    @staticmethod
    def _read_exactly(sock: socket.socket, n: int) -> bytes:
        chunks = []
        while n:
            chunk = sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
