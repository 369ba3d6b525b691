"""Embeddings from Infinity on the official model files, through port 28000 (issue 19).

The default scenario serves all-MiniLM-L6-v2 twice: as a GGUF file by llama-server under
text-embedding-ada-002, and as its sentence-transformers directory (the PyPI wheel's, sha256 per
file) by Infinity under text-embedding-3-small (molecule/default/host_vars/.../infinity.yml).
Each test drives the published port with the client people use and checks the meaning: the
vector sentence-transformers makes for the same text, token ids read as their text, a 400 that
names the limit, a killed engine that comes back.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time

import httpx
import openai
import pytest
import yaml
from openai_shapes import ShapeCheck
from scenario import API_KEY, BASE_URL, CONTAINER, PROJECT

# LangChain tokenizes with tiktoken, which would download cl100k_base: use the copy LiteLLM ships.
os.environ["TIKTOKEN_CACHE_DIR"] = str(PROJECT / ".cache/fixtures/tiktoken")
from langchain_openai import OpenAIEmbeddings

VARS = yaml.safe_load(
    (PROJECT / "molecule/default/host_vars/localai-default/infinity.yml").read_text()
)
ENTRY = VARS["__test_infinity_models"][0]
ALIAS = ENTRY["alias"]
PROGRAM = "infinity-embeddings"
JAPANESE = [
    "query: 夕飯はお肉です。",
    "東京は日本の首都です。",
    "晴れのち曇り、夜は雨になるでしょう。",
]
ENGLISH = ["The cat sits on the mat.", "GPUs serve models.", "A man is playing a guitar."]
SHAPES = ShapeCheck()


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
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, http_client=http)


@pytest.fixture(scope="module")
def reference() -> dict[str, list[float]]:
    """sentence-transformers' vectors of every test text, from the same model directory."""
    python = PROJECT / ".cache/convert-venv/bin/python"
    code = (
        "import json,sys; from sentence_transformers import SentenceTransformer as S; "
        "m=S(sys.argv[1], device='cpu'); t=json.loads(sys.argv[2]); "
        "print(json.dumps(dict(zip(t, m.encode(t).tolist()))))"
    )
    out = subprocess.run(
        [str(python), "-c", code, ENTRY["src"].replace("{{ __project }}", str(PROJECT)),
         json.dumps(JAPANESE + ENGLISH)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.mark.parametrize("texts", [JAPANESE, ENGLISH], ids=["ja", "en"])
def test_single_and_batched_vectors_are_sentence_transformers(sdk, reference, texts):
    """The SDK's default request (base64): each vector is the reference, alone or batched."""
    batched = sdk.embeddings.create(model=ALIAS, input=texts)
    assert [item.index for item in batched.data] == list(range(len(texts)))
    for text, item in zip(texts, batched.data, strict=True):
        single = sdk.embeddings.create(model=ALIAS, input=text)
        assert len(item.embedding) == 384
        assert cosine(single.data[0].embedding, reference[text]) >= 0.9999
        assert cosine(item.embedding, reference[text]) >= 0.9999
    assert batched.usage.prompt_tokens > len(texts)  # tokens, not one per text


def test_langchain_token_ids_are_read_as_their_text(http, reference):
    """LangChain sends cl100k_base token ids for an OpenAI model name; the proxy decodes them."""
    embed = OpenAIEmbeddings(
        model=ALIAS, base_url=BASE_URL, api_key=API_KEY, http_client=http, max_retries=0
    )
    vectors = embed.embed_documents(ENGLISH + JAPANESE[1:])
    for text, vector in zip(ENGLISH + JAPANESE[1:], vectors, strict=True):
        assert cosine(vector, reference[text]) >= 0.9999


def test_over_long_input_is_400_naming_the_limit(sdk):
    """Infinity would cut the input silently; the proxy counts with the model's tokenizer."""
    limit = ENTRY["prompt_tokens"]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.embeddings.create(model=ALIAS, input=["short", "word " * (limit + 10)])
    message = str(refused.value)
    assert f"maximum context length is {limit} tokens" in message
    assert int(re.search(r"you requested (\d+) tokens \(input\[1\]", message).group(1)) > limit


def test_input_at_the_limit_is_served(sdk):
    limit = ENTRY["prompt_tokens"]
    reply = sdk.embeddings.create(model=ALIAS, input=" ".join(["word"] * (limit - 2)))
    assert len(reply.data[0].embedding) == 384


def test_models_lists_the_alias_with_its_limit(sdk):
    listed = {model.id: model.model_dump() for model in sdk.models.list()}
    assert listed[ALIAS]["max_input_tokens"] == ENTRY["prompt_tokens"]


def engine_pid(host) -> str:
    """The engine's process id, as supervisord knows it (the image has no pgrep)."""
    return host.check_output(f"docker exec {CONTAINER} supervisorctl pid {PROGRAM}").strip()


def test_engine_runs_from_its_own_venv_without_telemetry(host):
    status = host.check_output(f"docker exec {CONTAINER} supervisorctl status {PROGRAM}")
    assert "RUNNING" in status
    pid = engine_pid(host)
    command = host.check_output(f"docker exec {CONTAINER} cat /proc/{pid}/cmdline")
    assert command.replace("\0", " ").startswith("/opt/localai/embed-venv/bin/python")
    environ = host.check_output(f"docker exec {CONTAINER} cat /proc/{pid}/environ").split("\0")
    assert "DO_NOT_TRACK=1" in environ
    assert "HF_HUB_OFFLINE=1" in environ


def test_killed_engine_comes_back(host, sdk, reference):
    before = engine_pid(host)
    host.check_output(f"docker exec {CONTAINER} sh -c 'kill -KILL {before}'")
    deadline = time.monotonic() + 180
    while True:
        try:
            reply = sdk.embeddings.create(model=ALIAS, input=ENGLISH[0])
            break
        except openai.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    assert engine_pid(host) != before
    assert cosine(reply.data[0].embedding, reference[ENGLISH[0]]) >= 0.9999
