"""``client.assistant``: the two endpoints, conversations, batches and streams.

Arguments are checked before anything is sent, by the validators of
:class:`~samsar_async.inputs.CompletionRequest` (the one definition of a
request); bad input raises :class:`~samsar_async.errors.InvalidArgumentError`
naming the field.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncGenerator, AsyncIterable, Coroutine, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._validators import check
from .config import DEFAULT_CONCURRENCY, UNSET, Timeout, Unset
from .converter import (
    asks_for_images,
    completion_body,
    parse_completion,
    parse_image_completion,
    parse_system_prompt,
    request_body,
)
from .errors import APIStatusError, InvalidArgumentError, SamsarError
from .inputs import CompletionRequest

if TYPE_CHECKING:
    # Imported where used (streaming, conversations, batches): a plain complete() needs
    # none of them, so `import samsar_async` does not load them.
    from typing_extensions import Unpack

    from ._base_client import BaseClient
    from .batch import BatchRun
    from .config import RetryPolicy
    from .conversation import Conversation
    from .events import ErrorEvent, StreamEvent
    from .inputs import CompletionInput, CompletionOptions, ImageGenerationTool, ToolChoice
    from .models import Response, SystemPrompt

__all__ = ["Assistant"]

COMPLETION_PATH = "/assistant/completion"
SYSTEM_PROMPT_PATH = "/assistant/set_system_prompt"


def _check_session_id(session_id: str) -> str:
    return check(CompletionRequest, "session_id", session_id)


def _error_event(exc: SamsarError) -> ErrorEvent:
    """The ``error`` event reporting a failed call."""
    from .events import ErrorEvent

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

    def __init__(self, client: BaseClient) -> None:
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
        return await self._client._post(
            SYSTEM_PROMPT_PATH,
            body,
            parse_system_prompt,
            idempotent=True,
            timeout=timeout,
            retry=retry,
            extra_headers=extra_headers,
        )

    async def clear_system_prompt(
        self,
        *,
        timeout: Timeout | float | Unset | None = UNSET,
        retry: RetryPolicy | Unset | None = UNSET,
        extra_headers: Mapping[str, str] | None = None,
    ) -> SystemPrompt:
        """Clear the account-level system prompt (Samsar's default prompt applies again)."""
        return await self.set_system_prompt(
            None, timeout=timeout, retry=retry, extra_headers=extra_headers
        )

    def complete(
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
    ) -> Coroutine[Any, Any, Response]:
        """Create an assistant response on ``session_id`` (the call waits for the answer).

        ``input`` may be a string, a :class:`~samsar_async.inputs.Message`, a
        sequence of messages, a multimodal content array, or dicts in the API's
        shape; ``None`` answers from the session's history. Options left as
        ``None`` are not sent. ``extra_body`` adds (or overrides) body fields.
        ``idempotency_key`` makes the call safe to repeat across processes.

        ``await client.assistant.complete(...)`` as usual. The arguments are
        checked when ``complete()`` is called, and the call itself is the
        returned awaitable (a plain method, not ``async def``: one coroutine
        frame fewer on every call's path).
        """
        body = completion_body(
            session_id,
            input,
            max_output_tokens,
            temperature,
            top_p,
            reasoning,
            metadata,
            tools,
            tool_choice,
            extra_body,
        )
        if idempotency_key is not None:
            check(CompletionRequest, "idempotency_key", idempotency_key)
        if (tools is not None or extra_body is not None) and asks_for_images(body):
            return self._client._post(
                COMPLETION_PATH,
                body,
                parse_image_completion,
                session_id=session_id,
                timeout=timeout,
                retry=retry,
                idempotency_key=idempotency_key,
                extra_headers=extra_headers,
                images=True,
            )
        return self._client._post(
            COMPLETION_PATH,
            body,
            parse_completion,
            session_id=session_id,
            timeout=timeout,
            retry=retry,
            idempotency_key=idempotency_key,
            extra_headers=extra_headers,
        )

    async def _send(self, request: CompletionRequest) -> Response:
        """:meth:`complete` for a :class:`CompletionRequest` (validated when it was built)."""
        body = request_body(request)
        images = asks_for_images(body)
        return await self._client._post(
            COMPLETION_PATH,
            body,
            parse_image_completion if images else parse_completion,
            session_id=request.session_id,
            idempotency_key=request.idempotency_key,
            extra_headers=request.extra_headers,
            images=images,
        )

    async def _send_adaptive(self, request: CompletionRequest) -> Response:
        """:meth:`_send` under the client's adaptive concurrency limit."""
        body = request_body(request)
        images = asks_for_images(body)
        return await self._client._post(
            COMPLETION_PATH,
            body,
            parse_image_completion if images else parse_completion,
            session_id=request.session_id,
            idempotency_key=request.idempotency_key,
            extra_headers=request.extra_headers,
            adaptive=True,
            images=images,
        )

    def stream(
        self,
        session_id: str,
        input: CompletionInput | None = None,
        *,
        chunk_chars: int | None = None,
        **options: Unpack[CompletionOptions],
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
        :class:`~samsar_async.events.ErrorEvent` and then ends normally:
        ``code`` is the exception's class name, ``message`` its text,
        ``param`` the field the server named, and ``error`` the exception.
        A stream never stops half-way. Bad arguments are a caller's bug, not a
        stream event: :class:`~samsar_async.errors.InvalidArgumentError` is
        raised, by this call for ``chunk_chars`` and by the first iteration,
        before any event, for the others. Cancellation propagates.
        """
        from .streaming import check_chunk_chars

        check_chunk_chars(chunk_chars)
        return self._stream(session_id, input, chunk_chars, options)

    async def _stream(
        self,
        session_id: str,
        input: CompletionInput | None,
        chunk_chars: int | None,
        options: CompletionOptions,
    ) -> AsyncGenerator[StreamEvent, None]:
        try:
            response = await self.complete(session_id, input, **options)
        except InvalidArgumentError:
            raise
        except SamsarError as exc:
            yield _error_event(exc)
            return
        from .streaming import events_from_response

        for event in events_from_response(response, chunk_chars=chunk_chars):
            yield event

    def conversation(self, session_id: str) -> Conversation:
        """The conversation helper for ``session_id``: its turns, credits and usage."""
        from .conversation import Conversation

        return Conversation(self.complete, _check_session_id(session_id))

    def session(self, session_id: str) -> Conversation:
        """Deprecated alias of :meth:`conversation` (removed in the next release)."""
        warnings.warn(
            "client.assistant.session() is renamed client.assistant.conversation()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.conversation(session_id)

    def complete_many(
        self,
        requests: Iterable[CompletionRequest] | AsyncIterable[CompletionRequest],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
        stop_on_error: bool = False,
        min_credits: Decimal | int | str | None = None,
        adaptive: bool = True,
    ) -> BatchRun:
        """Run many completions, at most ``concurrency`` at once; iterate the results.

        Results come as they finish (``ordered=True``: in input order, with a
        reorder window of ``concurrency``). Errors are results unless
        ``stop_on_error``. Once the last seen ``x-credits-remaining`` is below
        ``min_credits``, no new call is sent: the rest come back with a
        :class:`~samsar_async.errors.CreditBudgetExceededError` error.
        ``adaptive`` (on by default) runs the calls under the client's adaptive
        concurrency limit: on 429s the batch slows down for the whole account
        instead of failing (see the README's reliability section).
        See :mod:`samsar_async.batch`.
        """
        if not isinstance(adaptive, bool):
            raise InvalidArgumentError("adaptive", "must be True or False")
        from .batch import BatchRun

        return BatchRun(
            self._send_adaptive if adaptive else self._send,
            requests,
            concurrency=concurrency,
            ordered=ordered,
            stop_on_error=stop_on_error,
            min_credits=min_credits,
        )
