"""LiteLLM pre-call hook of localai-llamacpp: requests fitted to the models that really serve.

Why this file exists: the aliases carry OpenAI's model names (gpt-3.5-turbo,
text-embedding-ada-002), so clients send what they would send to OpenAI, and LiteLLM 1.108.0
passes it on unchanged to llama-server, which reads it differently:

- Token-id inputs (LangChain's OpenAIEmbeddings sends cl100k_base ids for an ada-002 model):
  llama-server takes them as ids of its own vocabulary, so the vector is of other text, or HTTP
  400 "invalid tokens". LiteLLM decodes ids only for providers outside its
  LITELLM_EMBEDDING_PROVIDERS_SUPPORTING_INPUT_ARRAY_OF_TOKENS, which includes openai/. Here an
  alias that tiktoken knows as an OpenAI model gets its ids decoded in that model's encoding;
  any other alias's ids are the engine's own and pass unchanged.
- An embedding input longer than the model's window: llama-server answers HTTP 500 (over its
  batch) and the router retries it. Here it is HTTP 400 at once, with the limit, as OpenAI
  answers. Tokens are counted by the engine's own /tokenize (the model's tokenizer, special
  tokens included), against the alias's model_info.max_input_tokens. Infinity has no
  /tokenize and cuts over-long inputs silently: for its aliases (model_info
  localai_tokenizer_file) the model's own tokenizer.json counts them here.
- `dimensions` for a model that makes vectors of one size only: dropped by drop_params, so the
  client got vectors of another size than it asked for. Here it is HTTP 400 unless it equals
  the engine's size (then it is dropped, nothing to do).
- `max_tokens` above the alias's model_info.max_output_tokens: llama-server lets a request's
  n_predict override its --n-predict. Here it is lowered to the configured cap, so the reply
  ends with finish_reason "length" at the cap, as when the client asks for no limit.

The limits are the ones litellm.yaml gives each deployment in model_info (max_input_tokens,
max_output_tokens), the same numbers /v1/models reports. Wired in litellm.yaml as
`litellm_settings.callbacks: localai_hooks.request_rules` (LiteLLM imports it from the config
directory); each proxy worker process holds its own instance.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
import tiktoken
import tokenizers
from litellm.integrations.custom_logger import CustomLogger

# Imported for its effect: it points TIKTOKEN_CACHE_DIR at the encodings LiteLLM ships (tiktoken
# would download them otherwise, and the stack has no internet). LiteLLM imports it lazily.
from litellm.litellm_core_utils import default_encoding  # noqa: F401
from litellm.proxy import proxy_server
from litellm.proxy._types import ProxyException

EMBEDDING_CALLS = frozenset({"aembedding", "embeddings"})
COMPLETION_CALLS = frozenset({"acompletion", "completion", "atext_completion", "text_completion"})
# Seconds to wait for an engine's /tokenize or /v1/models (both answer from the HTTP thread,
# without queueing behind the slots).
ENGINE_TIMEOUT_S = 10.0


def _bad_request(message: str, param: str) -> ProxyException:
    """An OpenAI-style HTTP 400 (error.type invalid_request_error, error.param the field)."""
    return ProxyException(message=message, type="invalid_request_error", param=param, code=400)


def _deployments(alias: str) -> list[dict[str, Any]]:
    """The router's deployments of an alias (empty for a name the router does not know)."""
    router = proxy_server.llm_router  # set once the proxy has loaded its config
    if router is None or not isinstance(alias, str):
        return []
    return list(router.get_model_list(model_name=alias) or [])


def _limit(deployments: Sequence[dict[str, Any]], field: str) -> int | None:
    """The alias's model_info limit (max_input_tokens / max_output_tokens), if configured."""
    values = [
        (d.get("model_info") or {}).get(field)
        for d in deployments
        if isinstance((d.get("model_info") or {}).get(field), int)
    ]
    return max(values) if values else None


def _engine(deployment: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Root URL of a deployment's llama-server (api_base without /v1) and its auth header."""
    params = deployment.get("litellm_params") or {}
    root = str(params.get("api_base", "")).rstrip("/").removesuffix("/v1")
    key = str(params.get("api_key") or "")
    if key.startswith("os.environ/"):
        key = os.environ.get(key.removeprefix("os.environ/"), "")
    return root, ({"Authorization": f"Bearer {key}"} if key and key != "none" else {})


@functools.lru_cache(maxsize=16)
def model_tokenizer(path: str) -> tokenizers.Tokenizer:
    """A model's tokenizer.json (Hugging Face tokenizers), without truncation or padding.

    A tokenizer file may carry truncation at the model's length; counting must see the whole
    input. Raises OSError/Exception from tokenizers when the file is missing or unreadable.
    """
    tokenizer = tokenizers.Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_with_tokenizer(path: str, texts: Sequence[str]) -> list[int | None]:
    """Tokens of each text by the model's tokenizer file, special tokens included ([CLS]/[SEP],
    <s>/</s>, as the engine adds them); None for each text when the file cannot be read."""
    try:
        tokenizer = model_tokenizer(path)
    except Exception:  # tokenizers raises its own Exception type
        return [None] * len(texts)
    return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=True)]


def openai_encoding(alias: str) -> tiktoken.Encoding | None:
    """The tiktoken encoding of an alias that names an OpenAI model, else None.

    text-embedding-ada-002 and gpt-3.5-turbo -> cl100k_base (tiktoken's model table, read from
    the files LiteLLM ships: see the default_encoding import).
    """
    try:
        return tiktoken.encoding_for_model(alias)
    except KeyError:
        return None


def token_id_inputs(value: Any) -> list[list[int]] | None:
    """The input as token-id arrays ([1, 2] or [[1, 2], [3]]), or None when it is text."""
    if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        return [value]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(item, list) and all(isinstance(t, int) for t in item) for item in value)
    ):
        return value
    return None


def decode_inputs(alias: str, arrays: list[list[int]]) -> list[str] | None:
    """Token-id arrays as text in the alias's OpenAI encoding; None: the ids are the engine's.

    Raises the 400 for an id the encoding does not have.
    """
    encoding = openai_encoding(alias)
    if encoding is None:
        return None
    try:
        return [encoding.decode(ids) for ids in arrays]
    except (KeyError, ValueError) as err:
        raise _bad_request(
            f"input holds token ids that {encoding.name} (the encoding of {alias}) does not "
            f"have: {err}",
            "input",
        ) from err


class RequestRules(CustomLogger):
    """Checks and fits each request before the router sends it to an engine."""

    def __init__(self) -> None:
        super().__init__()
        self._client: httpx.AsyncClient | None = None
        self._vector_sizes: dict[str, int] = {}  # engine root URL -> n_embd

    def _http(self) -> httpx.AsyncClient:
        """One keep-alive client per worker process, made on its event loop."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=ENGINE_TIMEOUT_S, trust_env=False)
        return self._client

    async def async_pre_call_hook(
        self,
        user_api_key_dict: Any,
        cache: Any,
        data: dict,
        call_type: str,
    ) -> dict:
        """Fit the request, or raise an HTTP 400 that says what to change."""
        del user_api_key_dict, cache
        deployments = _deployments(data.get("model"))
        if not deployments:
            return data
        if call_type in EMBEDDING_CALLS:
            await self._embedding(data, deployments)
        elif call_type in COMPLETION_CALLS:
            cap_max_tokens(data, _limit(deployments, "max_output_tokens"))
        return data

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict
    ) -> AsyncGenerator[Any, None]:
        """The usage chunk of a stream carries `choices: []`, as OpenAI's API reference says.

        LiteLLM 1.108.0 sends it as `choices: [{"index": 0, "delta": {}}]`, which code written
        to OpenAI's docs (`if not chunk.choices: read the usage`) takes for a content chunk.
        """
        del user_api_key_dict, request_data
        async for chunk in response:
            choices = getattr(chunk, "choices", None)
            if (
                getattr(chunk, "usage", None) is not None
                and choices
                and all(_empty_choice(choice) for choice in choices)
            ):
                chunk.choices = []
            yield chunk

    async def _embedding(self, data: dict, deployments: list[dict[str, Any]]) -> None:
        """Decode OpenAI token ids, refuse over-long inputs and unservable dimensions."""
        alias = data["model"]
        arrays = token_id_inputs(data.get("input"))
        texts: list[str] | None = None
        if arrays is not None:
            texts = decode_inputs(alias, arrays)
            if texts is not None:
                data["input"] = texts
        elif isinstance(data.get("input"), str):
            texts = [data["input"]]
        elif isinstance(data.get("input"), list) and all(isinstance(t, str) for t in data["input"]):
            texts = data["input"]
        limit = _limit(deployments, "max_input_tokens")
        if limit is not None:
            if texts is None and arrays is not None:  # the engine's own ids: one token each
                counts: list[int | None] = [len(ids) for ids in arrays]
            else:
                counts = await self._count_tokens(deployments, texts or [])
            refuse_over_long(alias, counts, limit)
        if data.get("dimensions") is not None:
            size = await self._vector_size(deployments)
            if size is not None and data["dimensions"] != size:
                raise _bad_request(
                    f"{alias} makes {size}-dimensional vectors and cannot shorten them: "
                    f"dimensions {data['dimensions']!r} is not supported; leave dimensions out "
                    f"(or set it to {size})",
                    "dimensions",
                )
            data.pop("dimensions")

    async def _count_tokens(
        self, deployments: list[dict[str, Any]], texts: list[str]
    ) -> list[int | None]:
        """Each text's token count by the engine's tokenizer (None: no engine answered)."""
        files = [(d.get("model_info") or {}).get("localai_tokenizer_file") for d in deployments]
        for path in files:
            if isinstance(path, str) and path and os.path.isfile(path):
                return count_with_tokenizer(path, texts)
        for deployment in deployments:  # replicas serve one model: the first that answers
            root, headers = _engine(deployment)
            try:
                return list(
                    await asyncio.gather(*(self._tokenize(root, headers, text) for text in texts))
                )
            except httpx.HTTPError:
                continue
        return [None] * len(texts)

    async def _tokenize(self, root: str, headers: dict[str, str], text: str) -> int:
        """Tokens of one embedding input as the engine counts them (with BOS/CLS, EOS/SEP)."""
        reply = await self._http().post(
            f"{root}/tokenize",
            json={"content": text, "add_special": True, "parse_special": True},
            headers=headers,
        )
        reply.raise_for_status()
        return len(reply.json()["tokens"])

    async def _vector_size(self, deployments: list[dict[str, Any]]) -> int | None:
        """The engine's embedding size, cached: llama-server's /v1/models meta.n_embd, else
        (Infinity, whose /v1/models does not tell) the length of one vector it makes."""
        for deployment in deployments:
            root, headers = _engine(deployment)
            if root not in self._vector_sizes:
                try:
                    size = await self._models_n_embd(root, headers)
                    if size is None:
                        size = await self._probe_vector_size(root, headers, deployment)
                    self._vector_sizes[root] = size
                except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
                    continue
            return self._vector_sizes[root]
        return None

    async def _models_n_embd(self, root: str, headers: dict[str, str]) -> int | None:
        """llama-server's embedding size from /v1/models (None: the engine does not say)."""
        reply = await self._http().get(f"{root}/v1/models", headers=headers)
        reply.raise_for_status()
        meta = reply.json()["data"][0].get("meta")
        return int(meta["n_embd"]) if isinstance(meta, dict) and "n_embd" in meta else None

    async def _probe_vector_size(
        self, root: str, headers: dict[str, str], deployment: dict[str, Any]
    ) -> int:
        """The length of the vector the engine makes for one short text."""
        model = str((deployment.get("litellm_params") or {}).get("model", "")).split("/", 1)[-1]
        reply = await self._http().post(
            f"{root}/v1/embeddings", json={"model": model, "input": ["size"]}, headers=headers
        )
        reply.raise_for_status()
        return len(reply.json()["data"][0]["embedding"])


def _empty_choice(choice: Any) -> bool:
    """A streamed choice that says nothing: no finish_reason, no content or tool calls."""
    delta = getattr(choice, "delta", None)
    return getattr(choice, "finish_reason", None) is None and not any(
        getattr(delta, field, None) for field in ("content", "tool_calls", "function_call")
    )


def refuse_over_long(alias: str, counts: Sequence[int | None], limit: int) -> None:
    """HTTP 400 for the first input over the limit, in the words OpenAI uses for it."""
    for index, count in enumerate(counts):
        if count is not None and count > limit:
            raise _bad_request(
                f"This model's maximum context length is {limit} tokens, however you requested "
                f"{count} tokens (input[{index}] of {alias}). Please reduce the input or split "
                "it into shorter texts.",
                "input",
            )


def cap_max_tokens(data: dict, cap: int | None) -> None:
    """Lower max_tokens / max_completion_tokens to the alias's max_output_tokens."""
    if cap is None:
        return
    for field in ("max_tokens", "max_completion_tokens"):
        value = data.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            data[field] = cap


request_rules = RequestRules()
