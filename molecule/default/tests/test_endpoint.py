"""End to end (issue 4): the official OpenAI SDK against the published port, and the faults.

Every chat and embeddings body the SDK receives here is also checked against OpenAI's field list
(openai_shapes.ShapeCheck).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.error
import urllib.request

import httpx
import openai
import pytest
from openai_shapes import ShapeCheck
from scenario import API_KEY, BASE_URL, CONTAINER, PROJECT

TEXTS = ["query: 夕飯はお肉です。", "The cat sits on the mat.", "GPUs serve models.", "晴れ"]
SHAPES = ShapeCheck()


@pytest.fixture(autouse=True)
def _responses_match_the_reference():
    """Whatever a test received must match OpenAI's field list."""
    SHAPES.take_problems()
    yield
    assert SHAPES.take_problems() == []


@pytest.fixture(scope="module")
def client() -> openai.OpenAI:
    with httpx.Client(transport=SHAPES, timeout=120) as http:
        yield openai.OpenAI(
            base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=120, http_client=http
        )


def wait_until_serving(client: openai.OpenAI, seconds: float) -> float:
    """Poll a tiny chat until it answers; return how long it took."""
    start = time.monotonic()
    while True:
        try:
            client.chat.completions.create(
                model="gpt-3.5-turbo",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=2,
            )
            return time.monotonic() - start
        except openai.APIError:
            if time.monotonic() - start > seconds:
                raise
            time.sleep(1)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_chat_returns_text(client):
    reply = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=16,
        temperature=0,
    )
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens > 0


def test_streaming_japanese_is_valid_utf8_and_finishes(client):
    stream = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[
            {"role": "system", "content": "あなたは優秀な観光ガイドです。"},
            {"role": "user", "content": "自己紹介をしてください"},
        ],
        max_tokens=48,
        stream=True,
    )
    parts, finish = [], None
    for chunk in stream:
        if not chunk.choices:
            continue
        parts.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    text = "".join(parts)
    assert text
    assert "\ufffd" not in text  # no broken multi-byte sequences
    text.encode("utf-8").decode("utf-8")
    assert finish in {"stop", "length"}


def test_embedding_default_encoding_has_384_floats(client):
    result = client.embeddings.create(model="text-embedding-ada-002", input=TEXTS[0])
    vector = result.data[0].embedding
    assert len(vector) == 384
    assert all(isinstance(x, float) for x in vector)


def test_embedding_float_encoding_has_384_floats(client):
    result = client.embeddings.create(
        model="text-embedding-ada-002", input=TEXTS[0], encoding_format="float"
    )
    assert len(result.data[0].embedding) == 384


def test_batch_returns_one_vector_per_input_in_order(client):
    batch = client.embeddings.create(
        model="text-embedding-ada-002", input=TEXTS, encoding_format="float"
    )
    assert [d.index for d in batch.data] == list(range(len(TEXTS)))
    for text, item in zip(TEXTS, batch.data, strict=True):
        single = client.embeddings.create(
            model="text-embedding-ada-002", input=text, encoding_format="float"
        )
        assert cosine(item.embedding, single.data[0].embedding) > 0.9999


def test_vectors_match_sentence_transformers(client):
    """Reference vectors from the same wheel, computed by sentence-transformers on the CPU."""
    python = PROJECT / ".cache/convert-venv/bin/python"
    model_dir = PROJECT / ".cache/models/all-MiniLM-L6-v2"
    code = (
        "import json,sys; from sentence_transformers import SentenceTransformer as S; "
        "m=S(sys.argv[1], device='cpu'); "
        "print(json.dumps(m.encode(json.loads(sys.argv[2])).tolist()))"
    )
    out = subprocess.run(
        [str(python), "-c", code, str(model_dir), json.dumps(TEXTS)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    ).stdout
    reference = json.loads(out.strip().splitlines()[-1])
    served = client.embeddings.create(
        model="text-embedding-ada-002", input=TEXTS, encoding_format="float"
    )
    for ref, item in zip(reference, served.data, strict=True):
        assert cosine(ref, item.embedding) >= 0.999


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer wrong-key"}, {}])
def test_wrong_or_missing_key_gets_401(headers):
    chat = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}]}
    embedding = {"model": "text-embedding-ada-002", "input": "x"}
    for path, body in [("/chat/completions", chat), ("/embeddings", embedding)]:
        request = urllib.request.Request(
            BASE_URL + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **headers},
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == 401, answer.value.read()


def test_engine_ports_are_not_reachable_from_outside_the_container(host):
    inspect = f"docker inspect {CONTAINER} -f"
    published = json.loads(host.check_output(f"{inspect} '{{{{json .NetworkSettings.Ports}}}}'"))
    assert set(published) == {"8000/tcp"}, published
    address = host.check_output(
        f"{inspect} '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}'"
    )
    # The engines, the balancer's frontends and its metrics port: loopback only.
    for port in (8080, 8090, 8300, 8301, 8299):
        probe = host.run(
            f"python3 -c \"import socket; socket.create_connection(('{address}', {port}), 3)\""
        )
        assert probe.rc != 0, f"port {port} answers on {address}"
        local = host.run(
            f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3)\""
        )
        assert local.rc != 0, f"port {port} answers on the host"


def test_unit_is_enabled(host):
    assert host.service("localai-llamacpp").is_enabled


def test_killed_chat_engine_serves_again_within_30s(host, client):
    pid = host.check_output(f"docker exec {CONTAINER} supervisorctl pid llamacpp-chat")
    assert pid.isdigit() and pid != "0", pid
    killed = host.run(f"docker exec {CONTAINER} supervisorctl signal KILL llamacpp-chat")
    assert killed.rc == 0, killed.stdout + killed.stderr
    assert wait_until_serving(client, 30) <= 30
    new_pid = host.check_output(f"docker exec {CONTAINER} supervisorctl pid llamacpp-chat")
    assert new_pid != pid


def test_restart_comes_back_ready(host, client):
    assert host.run("systemctl restart localai-llamacpp").rc == 0
    wait_until_serving(client, 180)
    result = client.embeddings.create(model="text-embedding-ada-002", input="ok")
    assert len(result.data[0].embedding) == 384
