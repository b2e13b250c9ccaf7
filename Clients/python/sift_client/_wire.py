"""Framing, typed results and errors shared by the sync and asyncio clients."""
from __future__ import annotations

import enum
import random
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from . import sift_pb2 as pb

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 16 << 20


class Code(enum.IntEnum):
    """gRPC's status codes, as the server sends them."""
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class SiftError(Exception):
    """A call failed; `code` says how, `message` what to do about it."""

    def __init__(self, code: Code, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RerankResult:
    index: int
    relevance_score: float
    """sigmoid(logit), 0..1: already a probability."""
    logit: float
    """logit("yes") - logit("no")."""
    tokens: int
    truncated: bool
    document: Optional[str] = None
    input_tokens: int = 0
    """All tokens of the pair fed to the model: prompt, document, suffix."""
    window: int = 0
    """With chunk_long_documents: the window (0-based) that gave the score."""
    windows: int = 1
    """With chunk_long_documents: the document's number of windows (1: it fit whole)."""


@dataclass(frozen=True)
class Usage:
    prefix_tokens: int
    prefix_tokens_cached: int
    document_tokens: int
    truncated_documents: int
    documents: int
    input_tokens: int = 0
    cached_documents: int = 0
    """Documents answered from the server's score cache (same bits, no compute)."""


@dataclass(frozen=True)
class RerankResponse:
    results: List[RerankResult]
    usage: Usage
    queued_ms: float
    compute_ms: float
    model_id: str


@dataclass(frozen=True)
class TokenizedText:
    count: int
    ids: List[int]
    """Empty unless return_ids was set."""


@dataclass(frozen=True)
class ServedModel:
    """One model a server serves, and the names that reach it."""
    name: str
    aliases: List[str]
    quantization: str
    hidden_size: int
    layers: int
    max_length: int
    is_default: bool


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    """The model described (the one asked for, else the default)."""
    quantization: str
    """"int8" or "fp32"."""
    hidden_size: int
    layers: int
    attention_heads: int
    kv_heads: int
    vocab_size: int
    max_length: int
    """Largest max_length a call may ask for."""
    default_max_length: int
    max_documents: int
    max_frame_bytes: int
    max_in_flight_per_connection: int
    server_version: str
    protocol_version: int
    default_instruction: str
    models: List[ServedModel] = field(default_factory=list)
    """Every model the server serves, the default first."""


@dataclass(frozen=True)
class Health:
    serving: bool
    active_requests: int
    queued_tokens: int


def parse_endpoint(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {text!r} is not host:port")
    return host.strip("[]"), int(port)


def encode(frame: pb.Frame) -> bytes:
    body = frame.SerializeToString()
    return HEADER.pack(len(body)) + body


def rerank_request(query: str, documents: List[str], instruction: Optional[str], top_n: Optional[int],
                   return_documents: bool, max_tokens_per_document: Optional[int], max_length: Optional[int],
                   input_order: bool, timeout: Optional[float], priority: int, stream: bool,
                   chunk_long_documents: bool = False, chunk_overlap_tokens: Optional[int] = None,
                   model: Optional[str] = None) -> pb.RerankRequest:
    request = pb.RerankRequest(
        query=query, documents=list(documents), top_n=top_n or 0,
        return_documents=return_documents, max_tokens_per_document=max_tokens_per_document or 0,
        max_length=max_length or 0, input_order=input_order,
        timeout_ms=max(1, int(timeout * 1000)) if timeout else 0, priority=priority, stream=stream,
        chunk_long_documents=chunk_long_documents, chunk_overlap_tokens=chunk_overlap_tokens or 0, model=model or "")
    if instruction is not None:
        request.instruction = instruction  # set, even to "": used as given; unset: the default
    return request


def tokenized(r: pb.TokenizeResponse) -> List[TokenizedText]:
    return [TokenizedText(count=t.count, ids=list(t.ids)) for t in r.texts]


def model_info(m: pb.ModelInfoResponse) -> ModelInfo:
    fields = {f: getattr(m, f) for f in ModelInfo.__dataclass_fields__ if f != "models"}
    served = [ServedModel(**{f: (list(getattr(s, f)) if f == "aliases" else getattr(s, f)) for f in ServedModel.__dataclass_fields__})
              for s in m.models]
    return ModelInfo(**fields, models=served)


def health(h: pb.HealthResponse) -> Health:
    return Health(serving=h.status == pb.HealthResponse.SERVING, active_requests=h.active_requests,
                  queued_tokens=h.queued_tokens)


def result(r: pb.RerankResult) -> RerankResult:
    return RerankResult(index=r.index, relevance_score=r.relevance_score, logit=r.logit, tokens=r.tokens,
                        truncated=r.truncated, document=r.document or None, input_tokens=r.input_tokens,
                        window=r.window, windows=max(1, r.windows))


def rerank_response(r: pb.RerankResponse) -> RerankResponse:
    u = r.usage
    return RerankResponse(
        results=[result(x) for x in r.results],
        usage=Usage(u.prefix_tokens, u.prefix_tokens_cached, u.document_tokens, u.truncated_documents, u.documents,
                    u.input_tokens, u.cached_documents),
        queued_ms=r.timings.queued_ms, compute_ms=r.timings.compute_ms, model_id=r.model_id)


def check(frame: pb.Frame, expected: str) -> pb.Frame:
    """The frame's body if it is `expected`; a status is raised as SiftError."""
    kind = frame.WhichOneof("body")
    if kind == "status":
        code = Code(frame.status.code) if frame.status.code in Code._value2member_map_ else Code.UNKNOWN
        raise SiftError(code, frame.status.message)
    if kind != expected:
        raise SiftError(Code.INTERNAL, f"the server answered {kind} to a call expecting {expected}")
    return getattr(frame, expected)


def backoff_delays(attempts: int, initial: float = 0.05, maximum: float = 2.0):
    """Full-jitter exponential backoff, so many clients do not retry in step."""
    delay = initial
    for _ in range(attempts - 1):
        yield random.uniform(0, delay)
        delay = min(delay * 2, maximum)
