"""Real clients get right answers (issue 18): LangChain, LlamaIndex and the openai SDK's paths.

Each test drives the published endpoint with a client library as its users call it (pinned in
requirements-dev.txt) and checks that the answer means what was asked: the same vector as the
text, a tool call with parsed arguments, a 400 that names the limit. Every response body also
passes ShapeCheck (openai_shapes.py: OpenAI's field list).

The fixture chat model (SmolLM2-135M-Instruct) is served with a tool-describing template (its
entry's chat_template_file: llama.cpp's Hermes 2 Pro tool-use template); being a 135M model, it
starts a call when the conversation shows two earlier calls (EARLIER_CALLS), as an agent's does.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from openai_shapes import ShapeCheck
from scenario import API_KEY, BASE_URL, CONTAINER, PROJECT, TEST_VARS

# LangChain tokenizes with tiktoken, which would download cl100k_base: use the copy LiteLLM
# ships (scripts/make-fixtures.sh extracts it from the image's LiteLLM wheel).
os.environ["TIKTOKEN_CACHE_DIR"] = str(PROJECT / ".cache/fixtures/tiktoken")

import tiktoken  # reads TIKTOKEN_CACHE_DIR when it loads an encoding
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.openai_like import OpenAILikeEmbedding
from llama_index.llms.openai_like import OpenAILike

CHAT, EMBEDDING = "gpt-3.5-turbo", "text-embedding-ada-002"
MODELS = {m["alias"]: m for m in TEST_VARS["localai_models"]}
SENTENCES = ["A man is playing a guitar.", "東京は日本の首都です。"]
SHAPES = ShapeCheck()
CHAT_ENGINE_METRICS = "http://127.0.0.1:8090/metrics"  # inside the container
ENGINE_PYTHON = "/opt/localai/venv/bin/python"


def weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"sunny in {city}"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name"}},
            "required": ["city"],
        },
    },
}
ASK_WEATHER = "What is the weather in Tokyo? Use the weather tool."
# An agent's conversation so far: two questions answered through the tool. llama.cpp 0c1e570 lets
# a model write text before its call even with tool_choice "required" (the grammar allows any
# text up to the call's opening tag), so the 135M fixture must start the call itself; after a
# bare question it talks instead, after these two turns it calls the tool (greedy, every time).
EARLIER_CALLS = [
    ("Osaka", "sunny, 25 C", "It is sunny in Osaka, 25 C."),
    ("Kyoto", "rain, 18 C", "It is raining in Kyoto, 18 C."),
]


def earlier_call_messages() -> list[dict]:
    """EARLIER_CALLS as OpenAI chat messages: user, assistant tool call, tool result, answer."""
    messages: list[dict] = []
    for n, (city, result, answer) in enumerate(EARLIER_CALLS):
        arguments = json.dumps({"city": city})
        call = {"id": f"call_{n}", "type": "function",
                "function": {"name": "weather", "arguments": arguments}}  # fmt: skip
        messages += [
            {"role": "user", "content": f"What is the weather in {city}? Use the weather tool."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{n}", "content": result},
            {"role": "assistant", "content": answer},
        ]
    return messages


@pytest.fixture(autouse=True)
def _responses_match_the_reference():
    """Whatever a test received must match OpenAI's field list."""
    SHAPES.take_problems()
    yield
    assert SHAPES.take_problems() == []


@pytest.fixture(scope="module")
def http() -> httpx.Client:
    with httpx.Client(transport=SHAPES, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(http) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=120, http_client=http
    )


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def text_vectors(sdk: openai.OpenAI, texts: list[str]) -> list[list[float]]:
    """The reference: the same texts sent as strings through the openai SDK."""
    reply = sdk.embeddings.create(model=EMBEDDING, input=texts, encoding_format="float")
    return [item.embedding for item in reply.data]


# --- Embeddings: token ids in the alias's encoding -------------------------------------------


def test_langchain_embeddings_with_defaults_match_the_text(sdk, http):
    """OpenAIEmbeddings sends cl100k_base token ids for an ada-002 model: same vectors as text."""
    embeddings = OpenAIEmbeddings(
        model=EMBEDDING, base_url=BASE_URL, api_key=API_KEY, http_client=http, max_retries=0
    )
    start = len(SHAPES.requests)
    vectors = embeddings.embed_documents(SENTENCES)
    query = embeddings.embed_query(SENTENCES[0])
    sent = [r["input"] for r in SHAPES.requests[start:]]
    assert all(isinstance(ids, list) and isinstance(ids[0], int) for r in sent for ids in r), sent
    references = text_vectors(sdk, [*SENTENCES, SENTENCES[0]])
    for vector, reference in zip([*vectors, query], references, strict=True):
        assert cosine(vector, reference) > 0.9999


def test_sdk_token_ids_of_the_issue_match_the_text(sdk):
    """The ids from the report: cl100k_base of each sentence, one array and a batch of arrays."""
    cl100k = tiktoken.get_encoding("cl100k_base")
    ids = [cl100k.encode(text) for text in SENTENCES]
    assert ids[0] == [32, 893, 374, 5737, 264, 17418, 13]
    single = sdk.embeddings.create(model=EMBEDDING, input=ids[0], encoding_format="float")
    batch = sdk.embeddings.create(model=EMBEDDING, input=ids)  # base64, the SDK's default
    references = text_vectors(sdk, SENTENCES)
    assert cosine(single.data[0].embedding, references[0]) > 0.9999
    for item, reference in zip(batch.data, references, strict=True):
        assert cosine(item.embedding, reference) > 0.9999


def test_sdk_token_ids_outside_the_encoding_get_400(sdk):
    with pytest.raises(openai.BadRequestError, match="cl100k_base"):
        sdk.embeddings.create(model=EMBEDDING, input=[[10**7]])


def test_llamaindex_embeddings_match_the_text(sdk, http):
    embed = OpenAILikeEmbedding(
        model_name=EMBEDDING, api_base=BASE_URL, api_key=API_KEY, http_client=http, max_retries=0
    )
    vectors = embed.get_text_embedding_batch(SENTENCES)
    for vector, reference in zip(vectors, text_vectors(sdk, SENTENCES), strict=True):
        assert cosine(vector, reference) > 0.9999
    assert cosine(embed.get_query_embedding(SENTENCES[1]), text_vectors(sdk, SENTENCES)[1]) > 0.9999


# --- Embeddings: the model's limits ----------------------------------------------------------


def test_over_long_input_is_400_at_once_with_the_limit(sdk):
    """About 1,400 tokens against a 512-token model: HTTP 400 naming 512, no retries first."""
    limit = MODELS[EMBEDDING]["prompt_tokens"]
    text = (
        "passage: "
        + "東京都の今日の天気は晴れ、最高気温は二十五度、湿度は六十パーセントの見込みです。" * 35
    )
    start = time.monotonic()
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.embeddings.create(model=EMBEDDING, input=["short one", text])
    assert time.monotonic() - start < 5
    assert refused.value.status_code == 400
    message = str(refused.value)
    assert f"maximum context length is {limit} tokens" in message
    assert int(re.search(r"you requested (\d+) tokens \(input\[1\]", message).group(1)) > limit


def test_input_at_the_limit_is_served(sdk):
    """The engine's own count: an input just inside the window still gets its vector."""
    limit = MODELS[EMBEDDING]["prompt_tokens"]
    text = " ".join(["word"] * (limit - 2))  # one token each, plus [CLS] and [SEP]
    reply = sdk.embeddings.create(model=EMBEDDING, input=text, encoding_format="float")
    assert len(reply.data[0].embedding) == 384


def test_dimensions_the_model_cannot_make_get_400(sdk):
    with pytest.raises(openai.BadRequestError, match="384-dimensional"):
        sdk.embeddings.create(model=EMBEDDING, input="x", dimensions=64)
    same = sdk.embeddings.create(
        model=EMBEDDING, input="x", dimensions=384, encoding_format="float"
    )
    assert len(same.data[0].embedding) == 384


# --- Chat: tool calls ------------------------------------------------------------------------


def assert_weather_call(name: str, arguments: dict) -> None:
    """A call of the weather tool whose arguments parsed to the schema's object, for Tokyo."""
    assert name == "weather"
    assert isinstance(arguments.get("city"), str) and "Tokyo" in arguments["city"], arguments


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_sdk_tool_call_comes_back_as_tool_calls(sdk, tool_choice):
    reply = sdk.chat.completions.create(
        model=CHAT,
        messages=[*earlier_call_messages(), {"role": "user", "content": ASK_WEATHER}],
        tools=[WEATHER_TOOL],
        tool_choice=tool_choice,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert_weather_call(call.function.name, json.loads(call.function.arguments))


def test_sdk_streamed_tool_call_joins_to_the_same_call(sdk):
    stream = sdk.chat.completions.create(
        model=CHAT,
        messages=[*earlier_call_messages(), {"role": "user", "content": ASK_WEATHER}],
        tools=[WEATHER_TOOL],
        temperature=0,
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        if not chunk.choices:  # a usage-only chunk
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.index == 0
            if delta.function:
                name += delta.function.name or ""
                arguments += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert_weather_call(name, json.loads(arguments))


def langchain_history() -> list:
    """EARLIER_CALLS as LangChain messages (its own types, which it converts for the request)."""
    messages: list = []
    for n, (city, result, answer) in enumerate(EARLIER_CALLS):
        messages += [
            HumanMessage(f"What is the weather in {city}? Use the weather tool."),
            AIMessage("", tool_calls=[{"name": "weather", "args": {"city": city},
                                       "id": f"call_{n}"}]),
            ToolMessage(result, tool_call_id=f"call_{n}"),
            AIMessage(answer),
        ]  # fmt: skip
    return messages


def test_langchain_tool_call_parsed_and_streamed(http):
    llm = ChatOpenAI(
        model=CHAT, base_url=BASE_URL, api_key=API_KEY, http_client=http, temperature=0,
        max_retries=0,
    )  # fmt: skip
    with_tools = llm.bind_tools([WEATHER_TOOL])
    messages = [*langchain_history(), HumanMessage(ASK_WEATHER)]
    message = with_tools.invoke(messages)
    assert len(message.tool_calls) == 1, message
    assert_weather_call(message.tool_calls[0]["name"], message.tool_calls[0]["args"])
    streamed = None
    for chunk in with_tools.stream(messages):
        streamed = chunk if streamed is None else streamed + chunk
    assert len(streamed.tool_calls) == 1, streamed
    assert_weather_call(streamed.tool_calls[0]["name"], streamed.tool_calls[0]["args"])
    assert streamed.tool_calls[0]["args"] == message.tool_calls[0]["args"]  # same, greedy
    assert SHAPES.checked.get("/chat/completions", 0) >= 2


def test_llamaindex_tool_call_parsed(http):
    llm = OpenAILike(
        model=CHAT, api_base=BASE_URL, api_key=API_KEY, http_client=http, is_chat_model=True,
        is_function_calling_model=True, temperature=0, max_retries=0,
    )  # fmt: skip
    history = [ChatMessage.model_validate(m) if m["role"] != "assistant" or m["content"]
               else ChatMessage(role="assistant", content="",
                                additional_kwargs={"tool_calls": m["tool_calls"]})
               for m in earlier_call_messages()]  # fmt: skip
    for message, raw in zip(history, earlier_call_messages(), strict=True):
        if raw["role"] == "tool":
            message.additional_kwargs["tool_call_id"] = raw["tool_call_id"]
    reply = llm.chat_with_tools(
        [FunctionTool.from_defaults(fn=weather)], ASK_WEATHER, chat_history=history
    )
    calls = llm.get_tool_calls_from_response(reply, error_on_no_tool_call=True)
    assert len(calls) == 1
    assert_weather_call(calls[0].tool_name, calls[0].tool_kwargs)


def test_llamaindex_streams_text(http):
    llm = OpenAILike(
        model=CHAT, api_base=BASE_URL, api_key=API_KEY, http_client=http, is_chat_model=True,
        temperature=0, max_tokens=24, max_retries=0,
    )  # fmt: skip
    text = "".join(part.delta or "" for part in llm.stream_complete("Name a colour."))
    assert text.strip()


def test_sdk_stream_with_usage_ends_with_the_usage_chunk(sdk):
    stream = sdk.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


# --- Chat: limits -----------------------------------------------------------------------------


def test_max_tokens_above_the_models_cap_is_capped(sdk):
    """The entry's max_tokens is the most one reply gets, whatever the request asks for."""
    cap = MODELS[CHAT]["max_tokens"]
    reply = sdk.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Count from one to one thousand in words."}],
        max_tokens=cap * 4,
        extra_body={"ignore_eos": True},  # llama-server: never stop early
        temperature=0,
    )
    assert reply.usage.completion_tokens == cap
    assert reply.choices[0].finish_reason == "length"


def test_models_report_the_aliases_real_limits(sdk):
    listed = {model.id: model.model_dump() for model in sdk.models.list()}
    assert listed[CHAT]["max_input_tokens"] == MODELS[CHAT]["prompt_tokens"]
    assert listed[CHAT]["max_output_tokens"] == MODELS[CHAT]["max_tokens"]
    assert listed[EMBEDDING]["max_input_tokens"] == MODELS[EMBEDDING]["prompt_tokens"]


# --- A client that gives up -------------------------------------------------------------------


def engine_load(host) -> tuple[float, float]:
    """The chat engine's requests in slots and waiting for one (llama-server /metrics)."""
    metrics = host.check_output(
        f"docker exec {CONTAINER} {ENGINE_PYTHON} -c "
        f"\"import urllib.request as u; print(u.urlopen('{CHAT_ENGINE_METRICS}').read().decode())\""
    )
    values = dict(re.findall(r"^llamacpp:(requests_\w+) ([0-9.e+]+)$", metrics, re.MULTILINE))
    return float(values["requests_processing"]), float(values["requests_deferred"])


# LiteLLM's cancel_on_disconnect closes the connection to llama-server when the client leaves.
# llama-server 0c1e570 noticed that for a non-streamed request only after its HTTP thread had
# waited one whole second without being woken, and any other task's result wakes it (tools/
# server/server-queue.cpp, server_response::recv_with_timeout): while another client streamed,
# the abandoned reply was generated to its end. The image's patch (roles/stack_image/files/
# llama.cpp-patches/0001-server-wait-deadline.patch) gives the wait one deadline; this test failed
# (a strict xfail) before it.
def test_abandoned_requests_stop_the_engines_work(host, sdk):
    """Non-streamed long replies whose clients give up after 1.5 s free the engine's slots.

    As in service: another client is streaming a long reply meanwhile (it keeps its slot).
    """
    streaming = threading.Event()
    stream_done = threading.Event()

    def other_client() -> None:
        for _ in sdk.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "Tell me a long story."}],
            max_tokens=MODELS[CHAT]["max_tokens"],
            extra_body={"ignore_eos": True},
            stream=True,
        ):
            streaming.set()
        stream_done.set()

    impatient = sdk.with_options(timeout=1.5)

    def give_up(_: int) -> None:
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(
                model=CHAT,
                messages=[{"role": "user", "content": "Tell me a long story."}],
                max_tokens=MODELS[CHAT]["max_tokens"],
                extra_body={"ignore_eos": True},
            )

    with ThreadPoolExecutor(4) as pool:
        streamer = pool.submit(other_client)
        assert streaming.wait(60), "the streamed reply never started"
        list(pool.map(give_up, range(3)))
        # Left running, 3 x 256 tokens would hold the engine's second slot for many seconds;
        # freed, the engine serves only the stream.
        deadline = time.monotonic() + 10
        while engine_load(host) != (1.0, 0.0):
            assert not stream_done.is_set(), "the stream ended before the engine dropped the rest"
            assert time.monotonic() < deadline, f"engine still working: {engine_load(host)}"
            time.sleep(0.5)
        start = time.monotonic()
        sdk.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert time.monotonic() - start < 10
        streamer.result()
