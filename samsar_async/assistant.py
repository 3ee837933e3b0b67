"""``client.assistant``: the two endpoints, sessions, and (later) batches and streams.

Arguments are checked here, before anything is sent; bad input raises
:class:`~samsar_async.errors.InvalidArgumentError` naming the field.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .batch import DEFAULT_CONCURRENCY, BatchRun
from .config import UNSET, Timeout, Unset
from .converter import (
    parse_completion,
    parse_system_prompt,
    unstructure_input,
    unstructure_tool,
    unstructure_tool_choice,
)
from .errors import APIStatusError, InvalidArgumentError, SamsarError
from .sessions import Session
from .streaming import ErrorEvent, StreamEvent, check_chunk_chars, events_from_response

if TYPE_CHECKING:
    from .client import AsyncSamsar
    from .inputs import CompletionInput, CompletionRequest, ImageGenerationTool, ToolChoice
    from .models import Response, SystemPrompt
    from .retry import RetryPolicy

__all__ = ["Assistant"]

COMPLETION_PATH = "/assistant/completion"
SYSTEM_PROMPT_PATH = "/assistant/set_system_prompt"


def _check_session_id(session_id: object) -> str:
    if type(session_id) is not str:
        raise InvalidArgumentError(
            "session_id", f"must be a string, not {type(session_id).__name__}"
        )
    if not session_id.strip():
        raise InvalidArgumentError("session_id", "must not be empty")
    return session_id


def _check_number(field: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidArgumentError(field, f"must be a number between {low} and {high}")
    return value


def _check_mapping(field: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(field, f"must be a dict, not {type(value).__name__}")
    return value


def _error_event(exc: SamsarError) -> ErrorEvent:
    """The ``error`` event reporting a failed call."""
    param = None
    if isinstance(exc, APIStatusError) and isinstance(exc.body, Mapping):
        error = exc.body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("param"), str):
            param = error["param"]
    return ErrorEvent(
        sequence_number=0, code=type(exc).__name__, message=str(exc), param=param, error=exc
    )


class Assistant:
    """The Assistant API resource: ``client.assistant``."""

    __slots__ = ("_client",)

    def __init__(self, client: AsyncSamsar) -> None:
        self._client = client

    async def set_system_prompt(
        self,
        system_prompt: str | None,
        *,
        timeout: Timeout | float | Unset | None = UNSET,
        retry: RetryPolicy | Unset | None = UNSET,
        extra_headers: Mapping[str, str] | None = None,
    ) -> SystemPrompt:
        """Store the account-level system prompt; ``None`` or ``""`` clears it (sends JSON null)."""
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InvalidArgumentError(
                "system_prompt", f"must be a string or None, not {type(system_prompt).__name__}"
            )
        body = {"system_prompt": system_prompt or None}
        return await self._client.post(
            SYSTEM_PROMPT_PATH,
            body,
            parse_system_prompt,
            idempotent=True,
            timeout=timeout,
            retry=retry,
            extra_headers=extra_headers,
        )

    async def clear_system_prompt(self, **options: Any) -> SystemPrompt:
        """Clear the account-level system prompt (Samsar's default prompt applies again)."""
        return await self.set_system_prompt(None, **options)

    async def complete(
        self,
        session_id: str,
        input: CompletionInput | None = None,
        *,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        reasoning: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        tools: Sequence[ImageGenerationTool | Mapping[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | float | Unset | None = UNSET,
        retry: RetryPolicy | Unset | None = UNSET,
        idempotency_key: str | None = None,
    ) -> Response:
        """Create an assistant response on ``session_id`` (the call waits for the answer).

        ``input`` may be a string, a :class:`~samsar_async.inputs.Message`, a
        sequence of messages, a multimodal content array, or dicts in the API's
        shape; ``None`` answers from the session's history. Options left as
        ``None`` are not sent. ``extra_body`` adds (or overrides) body fields.
        ``idempotency_key`` makes the call safe to repeat across processes.
        """
        body: dict[str, Any] = {"session_id": _check_session_id(session_id)}
        if input is not None:
            body["input"] = unstructure_input(input)
        if max_output_tokens is not None:
            if (
                isinstance(max_output_tokens, bool)
                or not isinstance(max_output_tokens, int)
                or max_output_tokens < 1
            ):
                raise InvalidArgumentError("max_output_tokens", "must be a positive integer")
            body["max_output_tokens"] = max_output_tokens
        if temperature is not None:
            body["temperature"] = _check_number("temperature", temperature, 0, 2)
        if top_p is not None:
            body["top_p"] = _check_number("top_p", top_p, 0, 1)
        if reasoning is not None:
            body["reasoning"] = _check_mapping("reasoning", reasoning)
        if metadata is not None:
            body["metadata"] = _check_mapping("metadata", metadata)
        if tools is not None:
            if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence):
                raise InvalidArgumentError("tools", "must be a sequence of tools")
            body["tools"] = [unstructure_tool(tool, i) for i, tool in enumerate(tools)]
        if tool_choice is not None:
            body["tool_choice"] = unstructure_tool_choice(tool_choice)
        if extra_body is not None:
            body.update(_check_mapping("extra_body", extra_body))
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not idempotency_key.strip()
        ):
            raise InvalidArgumentError("idempotency_key", "must be a non-empty string")
        return await self._client.post(
            COMPLETION_PATH,
            body,
            parse_completion,
            session_id=session_id,
            timeout=timeout,
            retry=retry,
            idempotency_key=idempotency_key,
            extra_headers=extra_headers,
        )

    def stream(
        self,
        session_id: str,
        input: CompletionInput | None = None,
        *,
        chunk_chars: int | None = None,
        **options: Any,
    ) -> AsyncGenerator[StreamEvent, None]:
        """:meth:`complete`, as OpenAI Responses streaming events.

        ::

            async for event in client.assistant.stream(session_id, "Write a caption"):
                if event.type == "response.output_text.delta":
                    print(event.delta, end="")

        Takes :meth:`complete`'s arguments (``options`` are its keyword
        options) and yields the events of
        :func:`~samsar_async.streaming.events_from_response`:
        ``response.created`` ... ``response.output_text.delta`` ...
        ``response.completed``, whose ``parsed`` is the :class:`Response`
        (credits included). ``chunk_chars=N`` splits each text part into
        deltas of ``N`` characters.

        The Samsar API answers in one piece today, so the events all arrive
        once the answer is in: the first one comes when :meth:`complete`
        would have returned. Code written against OpenAI's streaming events
        keeps working unchanged when Samsar streams for real.

        When the call fails with a :class:`~samsar_async.errors.SamsarError`
        (after its retries), the stream is one
        :class:`~samsar_async.streaming.ErrorEvent` and then ends normally:
        ``code`` is the exception's class name, ``message`` its text,
        ``param`` the field the server named, and ``error`` the exception.
        A stream never stops half-way. Bad arguments are a caller's bug, not a
        stream event: :class:`~samsar_async.errors.InvalidArgumentError` is
        raised, by this call for ``chunk_chars`` and by the first iteration,
        before any event, for the others. Cancellation propagates.
        """
        check_chunk_chars(chunk_chars)
        return self._stream(session_id, input, chunk_chars, options)

    async def _stream(
        self,
        session_id: str,
        input: CompletionInput | None,
        chunk_chars: int | None,
        options: dict[str, Any],
    ) -> AsyncGenerator[StreamEvent, None]:
        try:
            response = await self.complete(session_id, input, **options)
        except InvalidArgumentError:
            raise
        except SamsarError as exc:
            yield _error_event(exc)
            return
        for event in events_from_response(response, chunk_chars=chunk_chars):
            yield event

    def session(self, session_id: str) -> Session:
        """A conversation helper bound to ``session_id``."""
        return Session(self, _check_session_id(session_id))

    def complete_many(
        self,
        requests: Iterable[CompletionRequest] | AsyncIterable[CompletionRequest],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
        stop_on_error: bool = False,
        min_credits: Decimal | int | str | None = None,
    ) -> BatchRun:
        """Run many completions, at most ``concurrency`` at once; iterate the results.

        Results come as they finish (``ordered=True``: in input order, with a
        reorder window of ``concurrency``). Errors are results unless
        ``stop_on_error``. Once the last seen ``x-credits-remaining`` is below
        ``min_credits``, no new call is sent: the rest come back with a
        :class:`~samsar_async.errors.CreditBudgetExceeded` error.
        See :mod:`samsar_async.batch`.
        """
        return BatchRun(
            self,
            requests,
            concurrency=concurrency,
            ordered=ordered,
            stop_on_error=stop_on_error,
            min_credits=min_credits,
        )
