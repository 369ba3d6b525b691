"""The balancer (HAProxy) between the proxy and the engines: every request passes it, a changed
haproxy.cfg reloads it without restarting the stack, and a reload cuts no stream in flight."""

from __future__ import annotations

import re
import threading
import time

import openai
from scenario import API_KEY, BASE_URL, CONTAINER
from test_bad_input import run_converge
from test_metrics import get

CONFIG = "/etc/localai-llamacpp/haproxy.cfg"


def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=120)


def served(alias: str) -> dict[str, float]:
    """haproxy_server_sessions_total of each engine of an alias's backend (requests sent to it)."""
    status, text = get("/balancer/metrics")
    assert status == 200, text[:300]
    found = {}
    for match in re.finditer(
        r'^haproxy_server_sessions_total\{proxy="([^"]+)",server="([^"]+)"\} (\S+)$', text, re.M
    ):
        if match.group(1) == alias:
            found[match.group(2)] = float(match.group(3))
    return found


def pid_of(host, program: str) -> str:
    return host.check_output(f"docker exec {CONTAINER} supervisorctl pid {program}").strip()


def test_every_request_of_an_alias_passes_its_balancer():
    before = served("gpt-3.5-turbo")
    assert set(before) == {"llamacpp-chat"}
    for _ in range(3):
        client().chat.completions.create(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert served("gpt-3.5-turbo")["llamacpp-chat"] == before["llamacpp-chat"] + 3
    # (The proxy's hook counts each input's tokens at the engine's /tokenize, through the
    # balancer too: more than one request per embedding call.)
    emb = served("text-embedding-ada-002")
    client().embeddings.create(model="text-embedding-ada-002", input=["query: a", "query: b"])
    assert served("text-embedding-ada-002")["llamacpp-embeddings"] > emb["llamacpp-embeddings"]


def test_a_reload_cuts_no_stream_in_flight(host):
    """`supervisorctl signal USR2 balancer` (the handler's reload) while two streams run."""
    chunks: list[list[str]] = [[], []]
    endings: list[str | None] = [None, None]
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            reply = client().chat.completions.create(
                model="gpt-3.5-turbo",
                messages=[{"role": "user", "content": "Write a long story about a cat."}],
                max_tokens=256,
                stream=True,
            )
            for chunk in reply:
                if chunk.choices:
                    chunks[i].append(chunk.choices[0].delta.content or "")
                    endings[i] = chunk.choices[0].finish_reason or endings[i]
        except BaseException as err:
            errors.append(err)

    master = pid_of(host, "balancer")
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while not all(chunks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(chunks), "the streams did not start"
    at_reload = [len(c) for c in chunks]
    assert host.run(f"docker exec {CONTAINER} supervisorctl signal USR2 balancer").rc == 0
    for thread in threads:
        thread.join(120)
    assert errors == []
    # Each ended as a stream ends (a finish reason), not cut.
    assert all(endings), endings
    # Still streaming when the reload came, and they went on after it.
    after = [len(c) for c in chunks]
    assert all(n > m for n, m in zip(after, at_reload, strict=True)), (at_reload, after)
    # The master reloaded in place: same process, a new worker.
    assert pid_of(host, "balancer") == master
    log = host.check_output(f"docker exec {CONTAINER} tail -n 80 /logs/balancer.log")
    assert "Reloading HAProxy" in log and "Loading success" in log, log[-2000:]


def started_at(host) -> str:
    return host.check_output(f"docker inspect -f '{{{{.State.StartedAt}}}}' {CONTAINER}")


def test_a_changed_balancer_config_reloads_and_restarts_nothing(host):
    """site.yml with only a balancer knob changed (then the default again): a reload, no restart."""
    before = (pid_of(host, "litellm"), pid_of(host, "llamacpp-chat"), started_at(host))
    try:
        result = run_converge("-e", "localai_balancer_check_interval=3", timeout=900)
        assert result.returncode == 0, result.stdout[-4000:]
        assert "RUNNING HANDLER [stack_service : Reload the balancer]" in result.stdout
        assert "RUNNING HANDLER [stack_service : Restart localai-llamacpp]" not in result.stdout
        assert "inter 3s" in host.file(CONFIG).content_string
        after = (pid_of(host, "litellm"), pid_of(host, "llamacpp-chat"), started_at(host))
        assert after == before
    finally:
        restored = run_converge(timeout=900)
    assert restored.returncode == 0, restored.stdout[-4000:]
    assert "inter 2s" in host.file(CONFIG).content_string
