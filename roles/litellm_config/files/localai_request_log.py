"""LiteLLM callback of localai-llamacpp: one JSON line per request, with its bodies, in /logs.

Why: the setup this project replaces kept every request and response in litellm.log, and its
users read it to see what their clients sent. Prompts can be private, so it is off by default:
`litellm_config_request_log: true` adds this callback to litellm.yaml
(`litellm_settings.callbacks: localai_request_log.request_log`).

One line per request that reached the proxy with the key, as JSON (UTF-8, no ASCII escapes):

- ``time``: start, ISO 8601 UTC; ``id``: LiteLLM's call id (the ``x-litellm-call-id`` header)
- ``alias``: the model name the client asked for; ``model``: the engine's model name and
  ``call_type`` (acompletion, aembedding, ...), both of served requests; ``stream``
- ``status``: the HTTP status the client got (200, or the error's: 400 from a request rule, 500)
- ``duration_s``: seconds from the request to the last byte; ``ttft_s``: to the first streamed
  token (streams only)
- ``prompt_tokens``, ``completion_tokens``: the engine's usage
- ``request``: the OpenAI body fields the client sent (messages or input, and parameters such
  as max_tokens, temperature, tools); nothing else of the request: no headers, so the key is
  never in the log
- ``response``: the reply (choices and usage); for embeddings only how many vectors of which
  size (the vectors themselves would be most of the file and say nothing to a reader)
- ``error``: the error's message (failures only)

A request with a missing or wrong key (HTTP 401) gets a line without its body: that came from
someone without the key. Metrics scrapes (the /engines/... routes) get none.

The file rotates by size like the other logs: ``LOCALAI_REQUEST_LOG_MAX_BYTES`` bytes, then
``LOCALAI_REQUEST_LOG_BACKUPS`` older files (requests.log.1, ...). Every proxy worker is its
own process writing the same file, so the handler is concurrent-log-handler's
ConcurrentRotatingFileHandler, which takes a file lock around each write and each rotation.
Files are created mode 0600. The environment (stack.env) sets the path, size and count.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from concurrent_log_handler import ConcurrentRotatingFileHandler
from litellm.integrations.custom_logger import CustomLogger

# The OpenAI request fields a line keeps (chat, completions, embeddings); LiteLLM adds its own
# keys to the request (metadata with the caller's headers, the proxy's request, secret fields,
# the engine's api_key), which are never logged.
REQUEST_FIELDS = (
    "model",
    "messages",
    "prompt",
    "input",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "encoding_format",
    "dimensions",
)
EMBEDDING_CALLS = frozenset({"aembedding", "embedding"})


def _iso(seconds: float | None) -> str | None:
    """A Unix time in seconds as ISO 8601 UTC with milliseconds (None stays None)."""
    if not isinstance(seconds, int | float):
        return None
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """A pydantic object (LiteLLM's responses) as JSON-ready data; other values unchanged."""
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else value


def request_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI fields of a request body (REQUEST_FIELDS), in that order."""
    return {field: body[field] for field in REQUEST_FIELDS if field in body}


def vector_size(vector: Any) -> int | None:
    """Floats in one embedding: a list of floats, or base64 of float32s (the SDK's default)."""
    if isinstance(vector, list):
        return len(vector)
    if isinstance(vector, str):
        try:
            return len(base64.b64decode(vector, validate=True)) // 4
        except (binascii.Error, ValueError):
            return None
    return None


def response_summary(call_type: str, response: Any) -> Any:
    """The reply as logged: whole for chat and completions, a count and size for embeddings."""
    response = _plain(response)
    if call_type in EMBEDDING_CALLS and isinstance(response, Mapping):
        vectors = [item.get("embedding") for item in response.get("data") or []]
        sizes = sorted({size for v in vectors if (size := vector_size(v)) is not None})
        return {
            "vectors": len(vectors),
            "dimensions": sizes[0] if len(sizes) == 1 else (sizes or None),
            "usage": response.get("usage"),
        }
    return response


def success_record(payload: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """One line for a served request.

    payload: LiteLLM's StandardLoggingPayload (kwargs["standard_logging_object"]): times in
    Unix seconds, token counts from the engine's usage, the request's parameters in
    model_parameters. kwargs: the rest of LiteLLM's success kwargs, for the client's messages
    (chat) or input (embeddings) as sent.
    """
    call_type = str(payload.get("call_type") or "")
    start, end = payload.get("startTime"), payload.get("endTime")
    first = payload.get("completionStartTime")
    alias = payload.get("model_group") or kwargs.get("model")
    streamed = bool(payload.get("stream") or kwargs.get("stream"))
    request: dict[str, Any] = {"model": alias}
    if call_type in EMBEDDING_CALLS:
        request["input"] = kwargs.get("input")
    else:
        request["messages"] = kwargs.get("messages")
    request.update(request_fields(payload.get("model_parameters") or {}))
    record = {
        "time": _iso(start),
        "id": payload.get("litellm_call_id") or payload.get("id"),
        "alias": alias,
        "model": payload.get("model"),
        "call_type": call_type,
        "stream": streamed,
        "status": 200,
        "duration_s": round(end - start, 4) if _both_numbers(start, end) else None,
        "prompt_tokens": payload.get("prompt_tokens"),
        "completion_tokens": payload.get("completion_tokens"),
        "request": request,
        "response": response_summary(call_type, payload.get("response")),
    }
    if streamed and _both_numbers(start, first):
        record["ttft_s"] = round(first - start, 4)
    return record


def failure_record(
    body: Mapping[str, Any], error: BaseException, now: float | None = None
) -> dict[str, Any]:
    """One line for a request that failed: its status code, message and request fields."""
    status = getattr(error, "status_code", None) or getattr(error, "code", None)
    try:
        status = int(status)
    except (TypeError, ValueError):
        status = 500
    return {
        "time": _iso(now if now is not None else datetime.datetime.now(datetime.UTC).timestamp()),
        "id": body.get("litellm_call_id"),
        "alias": body.get("model"),
        "stream": bool(body.get("stream")),
        "status": status,
        # A refused key (401): the body came from someone without the key; not kept.
        "request": request_fields(body) if status != 401 else {"model": body.get("model")},
        "error": str(getattr(error, "message", None) or error),
    }


def _both_numbers(a: Any, b: Any) -> bool:
    return isinstance(a, int | float) and isinstance(b, int | float)


class RequestLog(CustomLogger):
    """Writes success_record / failure_record lines to the rotating request log."""

    def __init__(self) -> None:
        super().__init__()
        self._logger: logging.Logger | None = None

    def _log(self) -> logging.Logger:
        """The file logger, opened on first use (the proxy imports this module at start)."""
        if self._logger is None:
            handler = ConcurrentRotatingFileHandler(
                os.environ.get("LOCALAI_REQUEST_LOG_PATH", "/logs/requests.log"),
                maxBytes=int(os.environ.get("LOCALAI_REQUEST_LOG_MAX_BYTES", str(50 * 2**20))),
                backupCount=int(os.environ.get("LOCALAI_REQUEST_LOG_BACKUPS", "5")),
                encoding="utf-8",
                chmod=0o600,
                umask=0o077,
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger = logging.getLogger("localai.requests")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            logger.addHandler(handler)
            self._logger = logger
        return self._logger

    def _write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":"))
        self._log().info(line)

    async def async_log_success_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """A served request (streams: once, after the last chunk, with the joined reply)."""
        del response_obj, start_time, end_time
        payload = kwargs.get("standard_logging_object")
        if not isinstance(payload, Mapping) or payload.get("call_type") == "pass_through_endpoint":
            return  # metrics scrapes (pass-through routes) are not client requests
        self._write(success_record(payload, kwargs))

    async def async_post_call_failure_hook(
        self,
        request_data: dict,
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        """A request that failed after the key was checked (request rules' 400s included)."""
        del user_api_key_dict, traceback_str
        self._write(failure_record(request_data, original_exception))


request_log = RequestLog()
