"""samsar-async: the async-first Python SDK for the Samsar Assistant API.

::

    from samsar_async import AsyncSamsar

    async with AsyncSamsar() as client:
        resp = await client.assistant.complete("67df0d8ebc4f9d0b7f4fd123", "Write a caption")
        print(resp.output_text, resp.credits.charged)

Without an event loop, :class:`Samsar` offers the same API, blocking::

    with Samsar() as client:
        resp = client.assistant.complete("67df0d8ebc4f9d0b7f4fd123", "Write a caption")

The package's layers, top to bottom. A module imports only from its own layer
or below (``|`` separates modules of one layer that do not import each other);
import-linter checks this contract in CI (``[tool.importlinter]`` in
``pyproject.toml``), counting imports under ``if TYPE_CHECKING:``::

    tools        cli  >  integrations | testing
    client       sync (Samsar: AsyncSamsar on a loop in a thread)  >  client (AsyncSamsar:
                 composes the resources)
    resources    assistant  >  requests_file | sse
                 >  batch | conversation | streaming | images (files on disk)
    base client  _base_client (BaseClient: config, the pool, one call with retries)
                 >  _observe (event hooks and tracing watch the calls)
    transport    transport (aiohttp) | retry (tenacity) | _turns (session FIFO)
                 >  _flow (outage gate, adaptive concurrency)
    converter    converter (cattrs: builders -> JSON, JSON -> models and events; pure)
    data         events (stream events)  >  inputs | models
                 >  _wire_checks (what may be sent) | _imagebody (image answers, incremental)
                 >  config | hooks (event hooks)  >  _validators | _base64
                 >  errors | _json | _version | _logs (SAMSAR_LOG)
                 (no I/O anywhere here but _imagebody's temporary files)

Data flows one way: builders (``inputs``) are validated and turned into JSON by
the ``converter``, sent by the ``transport``, and the answer is turned back
into ``models`` by the ``converter``. Resources hold a ``BaseClient``; nothing
below ``client`` imports it.
"""

import logging as _logging
from typing import TYPE_CHECKING

from ._logs import setup_from_env as _setup_logging_from_env
from ._version import __version__
from .client import AsyncSamsar
from .config import UNSET, ClientState, RetryPolicy, Timeout, Unset
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
    CreditBudgetExceededError,
    ImageDecodeError,
    ImageSaveError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidArgumentError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    RateLimitError,
    SamsarError,
    ServerUnreachableError,
    StreamDecodeError,
    UnprocessableEntityError,
    UsageError,
)
from .inputs import (
    CompletionInput,
    CompletionOptions,
    CompletionRequest,
    ImageGenerationTool,
    InputImage,
    InputText,
    Message,
    ToolChoice,
)
from .models import (
    Credits,
    GeneratedImage,
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
from .retry import RetryBudget

if TYPE_CHECKING:
    from .batch import BatchResult, BatchRun
    from .conversation import Conversation, Turn
    from .events import (
        ContentPartAdded,
        ContentPartDone,
        ErrorEvent,
        ImageGenerationCompleted,
        ImageGenerationInProgress,
        OutputItemAdded,
        OutputItemDone,
        OutputTextDelta,
        OutputTextDone,
        RefusalDelta,
        RefusalDone,
        ResponseCompleted,
        ResponseCreated,
        ResponseFailed,
        ResponseIncomplete,
        ResponseInProgress,
        StreamEvent,
        UnknownEvent,
    )
    from .hooks import EventHooks, RequestEvent, ResponseEvent, RetryEvent
    from .images import UnknownImageFormatWarning
    from .sync import Samsar

# A library never configures logging; this keeps its WARNINGs off stderr unless the app opts in
# (or sets SAMSAR_LOG=debug|info: see samsar_async._logs).
_logging.getLogger("samsar_async").addHandler(_logging.NullHandler())
_setup_logging_from_env()

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
    "ClientState",
    "CompletionInput",
    "CompletionOptions",
    "CompletionRequest",
    "ConflictError",
    "ContentPartAdded",
    "ContentPartDone",
    "Conversation",
    "CreditBudgetExceededError",
    "Credits",
    "ErrorEvent",
    "EventHooks",
    "GeneratedImage",
    "ImageDecodeError",
    "ImageGenerationCall",
    "ImageGenerationCompleted",
    "ImageGenerationInProgress",
    "ImageGenerationTool",
    "ImageSaveError",
    "InputImage",
    "InputText",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidArgumentError",
    "Message",
    "NotFoundError",
    "OutcomeUnknownError",
    "OutputItemAdded",
    "OutputItemDone",
    "OutputMessage",
    "OutputText",
    "OutputTextDelta",
    "OutputTextDone",
    "PermissionDeniedError",
    "RateLimitError",
    "Refusal",
    "RefusalDelta",
    "RefusalDone",
    "RequestEvent",
    "Response",
    "ResponseCompleted",
    "ResponseCreated",
    "ResponseEvent",
    "ResponseFailed",
    "ResponseInProgress",
    "ResponseIncomplete",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "Samsar",
    "SamsarError",
    "ServerUnreachableError",
    "StreamDecodeError",
    "StreamEvent",
    "SystemPrompt",
    "Timeout",
    "ToolChoice",
    "Turn",
    "UnknownContent",
    "UnknownEvent",
    "UnknownImageFormatWarning",
    "UnknownOutputItem",
    "UnprocessableEntityError",
    "Unset",
    "Usage",
    "UsageError",
    "__version__",
]


# Names whose modules a plain complete() does not need: imported on first access
# (module __getattr__ below), then cached in this module's globals. The
# TYPE_CHECKING imports above give type checkers the same names.
_LAZY = {
    "BatchResult": "batch",
    "BatchRun": "batch",
    "ContentPartAdded": "events",
    "ContentPartDone": "events",
    "Conversation": "conversation",
    "ErrorEvent": "events",
    "EventHooks": "hooks",
    "ImageGenerationCompleted": "events",
    "ImageGenerationInProgress": "events",
    "OutputItemAdded": "events",
    "OutputItemDone": "events",
    "OutputTextDelta": "events",
    "OutputTextDone": "events",
    "RefusalDelta": "events",
    "RefusalDone": "events",
    "RequestEvent": "hooks",
    "ResponseCompleted": "events",
    "ResponseCreated": "events",
    "ResponseEvent": "hooks",
    "ResponseFailed": "events",
    "ResponseInProgress": "events",
    "ResponseIncomplete": "events",
    "RetryEvent": "hooks",
    "Samsar": "sync",
    "StreamEvent": "events",
    "Turn": "conversation",
    "UnknownEvent": "events",
    "UnknownImageFormatWarning": "images",
}

_DEPRECATED = {"Session": "Conversation", "CreditBudgetExceeded": "CreditBudgetExceededError"}


def __getattr__(name: str) -> object:
    """Lazily imported names, and deprecated aliases (removed in the next release):
    they warn, then resolve."""
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups never come back here
        return value
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(f"samsar_async.{name} is renamed {new}", DeprecationWarning, stacklevel=2)
    return __getattr__(new) if new in _LAZY else globals()[new]


def __dir__() -> list[str]:
    """Every public name, the lazily imported ones included."""
    return sorted(set(globals()) | set(_LAZY))
