"""The request log (litellm_config_request_log): off by default, and what it holds when on.

On: site.yml runs again with the knob (the stack restarts), and the log must hold one JSON line
per request with its bodies, status and tokens, rotate without losing lines while several proxy
workers write, stay 0600, and never hold the key. Then the run with the default turns it off
again, and new requests add nothing.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json

import openai
import pytest
from scenario import API_KEY, BASE_URL
from test_bad_input import recap_of, run_converge

LOG = "/var/log/localai-llamacpp/requests.log"
CHAT, EMBEDDING = "gpt-3.5-turbo", "text-embedding-ada-002"


def client(key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=BASE_URL, api_key=key, max_retries=0, timeout=120)


def log_lines(host) -> list[dict]:
    """Every line of the log and its rotated files, oldest first, each parsed."""
    files = host.check_output(f"ls -1tr {LOG}* 2>/dev/null || true").split()
    lines = []
    for path in files:
        lines += [json.loads(line) for line in host.file(path).content_string.splitlines()]
    return lines


def test_off_by_default(host):
    client().embeddings.create(model=EMBEDDING, input="query: not logged")
    assert not host.file(LOG).exists
    config = host.file("/etc/localai-llamacpp/litellm.yaml").content_string
    assert "localai_request_log" not in config


@pytest.fixture(scope="module")
def logging_on(host) -> dict[str, bool]:
    """site.yml with the request log on (small files, to rotate); the default again at the end
    (done by the last test, which checks it; here only if that test did not get to it)."""
    result = run_converge(
        "-e", "litellm_config_request_log=true",
        "-e", "litellm_config_request_log_max_bytes=8KB",
        "-e", "litellm_config_request_log_backups=5",
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    state = {"off": False}
    yield state
    if not state["off"]:
        run_converge(timeout=900)


def test_on_it_logs_each_request_with_its_bodies_status_and_tokens(host, logging_on):
    before = len(log_lines(host))
    reply = client().chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "夕飯は何ですか?"}], max_tokens=8
    )
    stream = client().chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    client().embeddings.create(model=EMBEDDING, input=["query: 晴れ", "query: rain"])
    with pytest.raises(openai.BadRequestError):
        client().embeddings.create(model=EMBEDDING, input="x", dimensions=7)
    with pytest.raises(openai.AuthenticationError):
        client("sk-not-the-key-0123456789").embeddings.create(model=EMBEDDING, input="secret?")

    chat, stream_line, embed, refused, wrong_key = log_lines(host)[before:]
    assert chat["alias"] == CHAT and chat["status"] == 200 and chat["stream"] is False
    assert chat["request"]["messages"] == [{"role": "user", "content": "夕飯は何ですか?"}]
    assert chat["request"]["max_tokens"] == 8
    assert chat["response"]["choices"][0]["message"]["content"] == reply.choices[0].message.content
    assert chat["completion_tokens"] == reply.usage.completion_tokens
    assert chat["prompt_tokens"] == reply.usage.prompt_tokens
    assert chat["duration_s"] > 0 and chat["time"].endswith("Z")

    assert stream_line["stream"] is True and stream_line["ttft_s"] > 0
    assert stream_line["response"]["choices"][0]["message"]["content"] == streamed

    assert embed["request"]["input"] == ["query: 晴れ", "query: rain"]
    assert embed["response"]["vectors"] == 2 and embed["response"]["dimensions"] == 384

    assert refused["status"] == 400 and refused["request"]["dimensions"] == 7
    assert "384-dimensional" in refused["error"]
    # A wrong key: the line says so, without the body its sender sent.
    assert wrong_key["status"] == 401 and wrong_key["request"] == {"model": EMBEDDING}


def test_on_it_rotates_without_losing_lines_and_never_holds_the_key(host, logging_on):
    texts = [f"query: document {i} " + "x" * 200 for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # both proxy workers write
        list(pool.map(lambda t: client().embeddings.create(model=EMBEDDING, input=t), texts))
    # 40 lines of about 600 bytes rotated at 8 KB: room for all in the file and 5 backups.
    logged = [line["request"].get("input") for line in log_lines(host)]
    assert sorted(t for t in logged if t in texts) == sorted(texts)  # each once, none lost
    assert host.file(f"{LOG}.1").exists
    assert not host.file(f"{LOG}.6").exists  # 5 backups kept
    for path in host.check_output(f"ls -1 {LOG}*").split():
        log_file = host.file(path)
        assert log_file.mode == 0o600 and log_file.uid == 10001, path
        text = log_file.content_string
        assert API_KEY not in text and hashlib.sha256(API_KEY.encode()).hexdigest() not in text


def test_the_default_run_turns_it_off(host, logging_on):
    """site.yml with the default: the callback leaves litellm.yaml, new requests add no line."""
    off = run_converge(timeout=900)
    logging_on["off"] = True
    assert off.returncode == 0, off.stdout[-4000:]
    assert recap_of(off.stdout)["failed"] == 0
    config = host.file("/etc/localai-llamacpp/litellm.yaml").content_string
    assert "localai_request_log" not in config
    before = len(log_lines(host))
    client().embeddings.create(model=EMBEDDING, input="query: after")
    assert len(log_lines(host)) == before
