"""Every chat-completion and embeddings response the tests receive, checked against OpenAI's API.

Why: a client library reads fields the endpoint tests never look at (a chunk's `object`, a
tool call's `id`, `usage` on the last chunk), and an alias that answers in another shape breaks
some client somewhere. So every response body that any client in these tests receives (the
openai SDK, LangChain, LlamaIndex) passes through ShapeCheck, an httpx transport the clients are
given (`http_client=`), which records what does not match.

The reference: the openai SDK's own types (openai.types.chat.ChatCompletion,
ChatCompletionChunk, openai.types.CreateEmbeddingResponse, generated from OpenAI's published
OpenAPI spec), validated strictly from the JSON text (required fields present, types exact,
literals such as object "chat.completion.chunk" and the finish_reason values), plus what the API
reference says about a whole response that no single type can say:
- a stream is `data: {chunk}` events ending with `data: [DONE]`; its chunks share one id,
  created and model; each choice ends with exactly one chunk that carries its finish_reason;
- with stream_options.include_usage, one more chunk comes last with `choices: []` and the usage,
  and every other chunk's usage is null; without it no chunk carries usage;
- a tool call's first delta names its id, type "function" and function name; its arguments,
  joined over the deltas (or whole in a non-streamed reply), are a JSON object; a reply with
  tool calls ends with finish_reason "tool_calls";
- embeddings: one vector per input, index 0..n-1 in order, all of one length; a base64 vector
  (the SDK's default encoding_format) decodes to float32 values.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pydantic
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk


def _problem_list(model: type[pydantic.BaseModel], text: str) -> list[str]:
    """Strict validation of one JSON document against an SDK type: the errors, located."""
    try:
        model.model_validate_json(text, strict=True)
    except pydantic.ValidationError as err:
        return [
            f"{model.__name__}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in err.errors()
        ]
    return []


def _tool_call_problems(where: str, calls: list[dict[str, Any]]) -> list[str]:
    """Whole tool calls (non-streamed, or joined from deltas): id, type, name, JSON arguments."""
    problems = []
    for number, call in enumerate(calls):
        label = f"{where} tool_calls[{number}]"
        function = call.get("function") or {}
        if not call.get("id") or call.get("type") != "function" or not function.get("name"):
            problems.append(f"{label} lacks id, type 'function' or function.name: {call}")
        try:
            arguments = json.loads(function.get("arguments") or "")
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            problems.append(f"{label} arguments are not a JSON object: {function!r}")
    return problems


def completion_problems(text: str) -> list[str]:
    """A non-streamed chat completion (JSON text)."""
    problems = _problem_list(ChatCompletion, text)
    if problems:
        return problems
    body = json.loads(text)
    if not body["choices"]:
        problems.append("chat.completion has no choices")
    for choice in body["choices"]:
        message = choice["message"]
        if choice.get("finish_reason") is None:
            problems.append(f"choices[{choice['index']}].finish_reason is null")
        if message.get("role") != "assistant":
            problems.append(f"choices[{choice['index']}].message.role is {message.get('role')!r}")
        calls = message.get("tool_calls") or []
        problems += _tool_call_problems(f"choices[{choice['index']}].message", calls)
        if calls and choice.get("finish_reason") != "tool_calls":
            problems.append(f"tool calls end with finish_reason {choice.get('finish_reason')!r}")
    return problems


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of a server-sent event stream, in order."""
    return [line[len("data:") :].strip() for line in text.splitlines() if line.startswith("data:")]


def stream_problems(text: str, include_usage: bool) -> list[str]:
    """A streamed chat completion (the SSE text), chunk by chunk and as a whole."""
    events = sse_data(text)
    if not events or events[-1] != "[DONE]":
        return [f"the stream does not end with data: [DONE] (last: {events[-1:]!r})"]
    problems = [p for chunk in events[:-1] for p in _problem_list(ChatCompletionChunk, chunk)]
    if problems or len(events) < 2:
        return problems or ["the stream has no chunks"]
    chunks = [json.loads(chunk) for chunk in events[:-1]]
    for field in ("id", "created", "model"):
        values = {json.dumps(chunk[field]) for chunk in chunks}
        if len(values) != 1:
            problems.append(f"chunks disagree on {field}: {sorted(values)}")
    if include_usage:
        last = chunks.pop()
        if last["choices"] or not last.get("usage"):
            problems.append(f"the usage chunk must come last with choices []: {last}")
    if any(chunk.get("usage") is not None for chunk in chunks):
        problems.append("a chunk other than the final usage chunk carries usage")
    return problems + _finish_problems(chunks) + _streamed_tool_call_problems(chunks)


def _finish_problems(chunks: list[dict[str, Any]]) -> list[str]:
    """Each choice's finish_reason comes once, on the last chunk that carries the choice."""
    problems = []
    indexes = {choice["index"] for chunk in chunks for choice in chunk["choices"]}
    for index in sorted(indexes):
        carrying = [
            (position, choice)
            for position, chunk in enumerate(chunks)
            for choice in chunk["choices"]
            if choice["index"] == index
        ]
        finished = [position for position, choice in carrying if choice.get("finish_reason")]
        if finished != [carrying[-1][0]]:
            problems.append(
                f"choice {index}: finish_reason at chunks {finished}, expected [{carrying[-1][0]}]"
            )
    return problems


def _streamed_tool_call_problems(chunks: list[dict[str, Any]]) -> list[str]:
    """Tool calls joined from their deltas: the first names them, the arguments add up."""
    calls: dict[tuple[int, int], dict[str, Any]] = {}
    reasons = set()
    for chunk in chunks:
        for choice in chunk["choices"]:
            reasons.add(choice.get("finish_reason"))
            for delta in choice["delta"].get("tool_calls") or []:
                function = delta.get("function") or {}
                call = calls.setdefault(
                    (choice["index"], delta["index"]),
                    {
                        "id": delta.get("id"),
                        "type": delta.get("type"),
                        "function": {"name": function.get("name"), "arguments": ""},
                    },
                )
                call["function"]["arguments"] += function.get("arguments") or ""
    problems = _tool_call_problems("stream", list(calls.values()))
    reasons.discard(None)
    if calls and reasons != {"tool_calls"}:
        problems.append(f"a stream with tool calls ends with finish_reason {sorted(reasons)}")
    return problems


def embeddings_problems(text: str, request: dict[str, Any]) -> list[str]:
    """An embeddings response (JSON text) for the request that asked for it."""
    body = json.loads(text)
    base64_vectors = request.get("encoding_format") == "base64"
    if base64_vectors:  # the SDK's type is the decoded one: decode, then validate
        for item in body.get("data") or []:
            raw = base64.b64decode(item.get("embedding", ""))
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    problems = _problem_list(CreateEmbeddingResponse, json.dumps(body))
    if problems:
        return problems
    inputs = request.get("input")
    count = (
        1
        if isinstance(inputs, str) or (inputs and all(isinstance(t, int) for t in inputs))
        else len(inputs or [])
    )
    if [item["index"] for item in body["data"]] != list(range(count)):
        problems.append(f"{count} inputs got indexes {[item['index'] for item in body['data']]}")
    if len({len(item["embedding"]) for item in body["data"]}) > 1:
        problems.append("the vectors differ in length")
    return problems


class _Tee(httpx.SyncByteStream):
    """A response body passed on as it arrives and kept, checked once the client closes it."""

    def __init__(self, inner: httpx.SyncByteStream, on_close: Any) -> None:
        self._inner = inner
        self._on_close = on_close
        self._parts: list[bytes] = []

    def __iter__(self) -> Iterator[bytes]:
        for part in self._inner:
            self._parts.append(part)
            yield part

    def close(self) -> None:
        self._inner.close()
        self._on_close(b"".join(self._parts).decode("utf-8"))


class ShapeCheck(httpx.BaseTransport):
    """httpx transport that checks every successful /chat/completions and /embeddings body.

    Give clients `http_client=httpx.Client(transport=SHAPES)`; a test then asserts
    `SHAPES.take_problems() == []`. `checked` counts the bodies checked, per path, and
    `requests` keeps each checked request's JSON body (what the client really sent).
    """

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.problems: list[str] = []
        self.checked: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        path = request.url.path.removeprefix("/v1")
        if response.status_code != 200 or path not in ("/chat/completions", "/embeddings"):
            return response
        sent = json.loads(request.content or b"{}")
        self.requests.append(sent)

        def check(text: str) -> None:
            if path == "/embeddings":
                found = embeddings_problems(text, sent)
            elif sent.get("stream"):
                usage = bool((sent.get("stream_options") or {}).get("include_usage"))
                found = stream_problems(text, usage)
            else:
                found = completion_problems(text)
            self.checked[path] = self.checked.get(path, 0) + 1
            self.problems += [f"{path} (stream={bool(sent.get('stream'))}): {p}" for p in found]

        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, check),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self._inner.close()

    def take_problems(self) -> list[str]:
        """The problems found since the last call (and forget them)."""
        found, self.problems = self.problems, []
        return found
