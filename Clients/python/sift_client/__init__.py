"""Python client for Sift, the Qwen3-Reranker inference service."""
from ._wire import Code, Health, ModelInfo, RerankResponse, RerankResult, ServedModel, SiftError, TokenizedText, Usage
from .aio import AsyncClient
from .client import Client

__all__ = ["AsyncClient", "Client", "Code", "Health", "ModelInfo", "RerankResponse", "RerankResult", "ServedModel",
           "SiftError", "TokenizedText", "Usage"]
__version__ = "0.8.0"
