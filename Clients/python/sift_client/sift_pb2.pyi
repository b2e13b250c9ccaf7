from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[Code]
    CANCELLED: _ClassVar[Code]
    UNKNOWN: _ClassVar[Code]
    INVALID_ARGUMENT: _ClassVar[Code]
    DEADLINE_EXCEEDED: _ClassVar[Code]
    NOT_FOUND: _ClassVar[Code]
    ALREADY_EXISTS: _ClassVar[Code]
    PERMISSION_DENIED: _ClassVar[Code]
    RESOURCE_EXHAUSTED: _ClassVar[Code]
    FAILED_PRECONDITION: _ClassVar[Code]
    ABORTED: _ClassVar[Code]
    OUT_OF_RANGE: _ClassVar[Code]
    UNIMPLEMENTED: _ClassVar[Code]
    INTERNAL: _ClassVar[Code]
    UNAVAILABLE: _ClassVar[Code]
    DATA_LOSS: _ClassVar[Code]
    UNAUTHENTICATED: _ClassVar[Code]
OK: Code
CANCELLED: Code
UNKNOWN: Code
INVALID_ARGUMENT: Code
DEADLINE_EXCEEDED: Code
NOT_FOUND: Code
ALREADY_EXISTS: Code
PERMISSION_DENIED: Code
RESOURCE_EXHAUSTED: Code
FAILED_PRECONDITION: Code
ABORTED: Code
OUT_OF_RANGE: Code
UNIMPLEMENTED: Code
INTERNAL: Code
UNAVAILABLE: Code
DATA_LOSS: Code
UNAUTHENTICATED: Code

class Frame(_message.Message):
    __slots__ = ("request_id", "metadata", "rerank_request", "rerank_response", "rerank_partial", "tokenize_request", "tokenize_response", "model_info_request", "model_info_response", "health_request", "health_response", "cancel_request", "status")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RERANK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RERANK_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    RERANK_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    TOKENIZE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    TOKENIZE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MODEL_INFO_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_INFO_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REQUEST_FIELD_NUMBER: _ClassVar[int]
    HEALTH_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    metadata: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    rerank_request: RerankRequest
    rerank_response: RerankResponse
    rerank_partial: RerankPartial
    tokenize_request: TokenizeRequest
    tokenize_response: TokenizeResponse
    model_info_request: ModelInfoRequest
    model_info_response: ModelInfoResponse
    health_request: HealthRequest
    health_response: HealthResponse
    cancel_request: CancelRequest
    status: Status
    def __init__(self, request_id: _Optional[int] = ..., metadata: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ..., rerank_request: _Optional[_Union[RerankRequest, _Mapping]] = ..., rerank_response: _Optional[_Union[RerankResponse, _Mapping]] = ..., rerank_partial: _Optional[_Union[RerankPartial, _Mapping]] = ..., tokenize_request: _Optional[_Union[TokenizeRequest, _Mapping]] = ..., tokenize_response: _Optional[_Union[TokenizeResponse, _Mapping]] = ..., model_info_request: _Optional[_Union[ModelInfoRequest, _Mapping]] = ..., model_info_response: _Optional[_Union[ModelInfoResponse, _Mapping]] = ..., health_request: _Optional[_Union[HealthRequest, _Mapping]] = ..., health_response: _Optional[_Union[HealthResponse, _Mapping]] = ..., cancel_request: _Optional[_Union[CancelRequest, _Mapping]] = ..., status: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class MetadataEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: Code
    message: str
    def __init__(self, code: _Optional[_Union[Code, str]] = ..., message: _Optional[str] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("query", "instruction", "documents", "top_n", "return_documents", "max_tokens_per_document", "max_length", "input_order", "timeout_ms", "priority", "stream", "chunk_long_documents", "chunk_overlap_tokens", "model")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    INPUT_ORDER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CHUNK_LONG_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    query: str
    instruction: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    return_documents: bool
    max_tokens_per_document: int
    max_length: int
    input_order: bool
    timeout_ms: int
    priority: int
    stream: bool
    chunk_long_documents: bool
    chunk_overlap_tokens: int
    model: str
    def __init__(self, query: _Optional[str] = ..., instruction: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., return_documents: _Optional[bool] = ..., max_tokens_per_document: _Optional[int] = ..., max_length: _Optional[int] = ..., input_order: _Optional[bool] = ..., timeout_ms: _Optional[int] = ..., priority: _Optional[int] = ..., stream: _Optional[bool] = ..., chunk_long_documents: _Optional[bool] = ..., chunk_overlap_tokens: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("index", "relevance_score", "logit", "tokens", "truncated", "document", "input_tokens", "window", "windows")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    index: int
    relevance_score: float
    logit: float
    tokens: int
    truncated: bool
    document: str
    input_tokens: int
    window: int
    windows: int
    def __init__(self, index: _Optional[int] = ..., relevance_score: _Optional[float] = ..., logit: _Optional[float] = ..., tokens: _Optional[int] = ..., truncated: _Optional[bool] = ..., document: _Optional[str] = ..., input_tokens: _Optional[int] = ..., window: _Optional[int] = ..., windows: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prefix_tokens", "prefix_tokens_cached", "document_tokens", "truncated_documents", "documents", "input_tokens", "cached_documents")
    PREFIX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_TOKENS_CACHED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    prefix_tokens: int
    prefix_tokens_cached: int
    document_tokens: int
    truncated_documents: int
    documents: int
    input_tokens: int
    cached_documents: int
    def __init__(self, prefix_tokens: _Optional[int] = ..., prefix_tokens_cached: _Optional[int] = ..., document_tokens: _Optional[int] = ..., truncated_documents: _Optional[int] = ..., documents: _Optional[int] = ..., input_tokens: _Optional[int] = ..., cached_documents: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queued_ms", "compute_ms")
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    queued_ms: float
    compute_ms: float
    def __init__(self, queued_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "usage", "timings", "model_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    usage: Usage
    timings: Timings
    model_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., model_id: _Optional[str] = ...) -> None: ...

class RerankPartial(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("texts", "return_ids", "model")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    return_ids: bool
    model: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., return_ids: _Optional[bool] = ..., model: _Optional[str] = ...) -> None: ...

class TokenizedText(_message.Message):
    __slots__ = ("count", "ids")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    count: int
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, count: _Optional[int] = ..., ids: _Optional[_Iterable[int]] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedCompositeFieldContainer[TokenizedText]
    def __init__(self, texts: _Optional[_Iterable[_Union[TokenizedText, _Mapping]]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelInfoResponse(_message.Message):
    __slots__ = ("model_id", "quantization", "hidden_size", "layers", "attention_heads", "kv_heads", "vocab_size", "max_length", "default_max_length", "max_documents", "max_frame_bytes", "max_in_flight_per_connection", "server_version", "protocol_version", "default_instruction", "models")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_HEADS_FIELD_NUMBER: _ClassVar[int]
    KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_PER_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    quantization: str
    hidden_size: int
    layers: int
    attention_heads: int
    kv_heads: int
    vocab_size: int
    max_length: int
    default_max_length: int
    max_documents: int
    max_frame_bytes: int
    max_in_flight_per_connection: int
    server_version: str
    protocol_version: int
    default_instruction: str
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    def __init__(self, model_id: _Optional[str] = ..., quantization: _Optional[str] = ..., hidden_size: _Optional[int] = ..., layers: _Optional[int] = ..., attention_heads: _Optional[int] = ..., kv_heads: _Optional[int] = ..., vocab_size: _Optional[int] = ..., max_length: _Optional[int] = ..., default_max_length: _Optional[int] = ..., max_documents: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ..., max_in_flight_per_connection: _Optional[int] = ..., server_version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., default_instruction: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("name", "aliases", "quantization", "hidden_size", "layers", "max_length", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    quantization: str
    hidden_size: int
    layers: int
    max_length: int
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., quantization: _Optional[str] = ..., hidden_size: _Optional[int] = ..., layers: _Optional[int] = ..., max_length: _Optional[int] = ..., is_default: _Optional[bool] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "active_requests", "queued_tokens")
    class ServingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[HealthResponse.ServingStatus]
        SERVING: _ClassVar[HealthResponse.ServingStatus]
        NOT_SERVING: _ClassVar[HealthResponse.ServingStatus]
    UNKNOWN: HealthResponse.ServingStatus
    SERVING: HealthResponse.ServingStatus
    NOT_SERVING: HealthResponse.ServingStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    status: HealthResponse.ServingStatus
    active_requests: int
    queued_tokens: int
    def __init__(self, status: _Optional[_Union[HealthResponse.ServingStatus, str]] = ..., active_requests: _Optional[int] = ..., queued_tokens: _Optional[int] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    def __init__(self, request_id: _Optional[int] = ...) -> None: ...
