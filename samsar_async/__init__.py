"""samsar-async: the async-first Python SDK for the Samsar Assistant API.

::

    from samsar_async import AsyncSamsar

    async with AsyncSamsar() as client:
        resp = await client.assistant.complete("67df0d8ebc4f9d0b7f4fd123", "Write a caption")
        print(resp.output_text, resp.credits.charged)
"""

import logging as _logging

from ._version import __version__
from .batch import BatchResult, BatchRun
from .client import AsyncSamsar
from .config import UNSET, Timeout
from .errors import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIError,
    APIReadTimeoutError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    Attempt,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConflictError,
    CreditBudgetExceeded,
    ImageDecodeError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidArgumentError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    RateLimitError,
    SamsarError,
    StreamDecodeError,
    UnprocessableEntityError,
)
from .images import GeneratedImage
from .inputs import CompletionRequest, ImageGenerationTool, InputImage, InputText, Message
from .models import (
    Credits,
    ImageGenerationCall,
    OutputMessage,
    OutputText,
    Refusal,
    Response,
    SystemPrompt,
    UnknownContent,
    UnknownOutputItem,
    Usage,
)
from .retry import RetryBudget, RetryPolicy
from .sessions import Session, Turn

# A library never configures logging; this keeps its WARNINGs off stderr unless the app opts in.
_logging.getLogger("samsar_async").addHandler(_logging.NullHandler())

__all__ = [
    "UNSET",
    "APIConnectTimeoutError",
    "APIConnectionError",
    "APIError",
    "APIReadTimeoutError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncSamsar",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "BatchResult",
    "BatchRun",
    "ClientClosedError",
    "CompletionRequest",
    "ConflictError",
    "CreditBudgetExceeded",
    "Credits",
    "GeneratedImage",
    "ImageDecodeError",
    "ImageGenerationCall",
    "ImageGenerationTool",
    "InputImage",
    "InputText",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidArgumentError",
    "Message",
    "NotFoundError",
    "OutcomeUnknownError",
    "OutputMessage",
    "OutputText",
    "PermissionDeniedError",
    "RateLimitError",
    "Refusal",
    "Response",
    "RetryBudget",
    "RetryPolicy",
    "SamsarError",
    "Session",
    "StreamDecodeError",
    "SystemPrompt",
    "Timeout",
    "Turn",
    "UnknownContent",
    "UnknownOutputItem",
    "UnprocessableEntityError",
    "Usage",
    "__version__",
]
