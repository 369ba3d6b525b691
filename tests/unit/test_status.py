"""Unit tests of status_lines (playbooks/status.yml): what an operator reads."""

from __future__ import annotations

from ansible_collections.localai.llamacpp.plugins.filter.status import status_lines

DEPLOYED = {
    "image": "localai-llamacpp:0c1e57098bba-sm90-18c3cf80037f",
    "port": 28000,
    "run_proxy": True,
    "gpu_mode": "gpu",
    "engines": [
        {"program": "llamacpp-chat", "kind": "chat", "model": "Llama-3-ELYZA-JP-8B",
         "alias": "gpt-3.5-turbo", "port": 8090, "gpu": 0, "parallel": 64, "ctx_size": 262144},
        {"program": "llamacpp-embeddings", "kind": "embedding", "model": "multilingual-e5-small",
         "alias": "text-embedding-ada-002", "port": 8080, "gpu": 0, "parallel": 4,
         "ctx_size": 4096},
    ],
}  # fmt: skip
CONTAINER = {
    "State": {"Status": "running", "StartedAt": "2026-12-03T11:05:20.123456789Z"},
    "Config": {"Image": DEPLOYED["image"]},
}
PROGRAMS = [
    "litellm                          RUNNING   pid 10, uptime 0:09:34",
    "llamacpp-chat                    RUNNING   pid 8, uptime 0:09:34",
    "llamacpp-embeddings              FATAL     Exited too quickly (process log may have details)",
]


def test_serving_host_reads_as_one_line_per_program_and_gpu():
    lines = status_lines(
        DEPLOYED,
        {"unit": "active", "container": CONTAINER, "programs": PROGRAMS,
         "load": '{"8090": [3, 1], "8080": null}',
         "gpus": ["0, NVIDIA H200, 41918, 143771"]},
    )  # fmt: skip
    assert lines == [
        "localai-llamacpp.service active; image localai-llamacpp:0c1e57098bba-sm90-18c3cf80037f"
        " (container running since 2026-12-03T11:05:20)",
        "litellm RUNNING: the proxy, port 28000",
        "llamacpp-chat RUNNING: gpt-3.5-turbo = Llama-3-ELYZA-JP-8B, 64 slots, ctx 262144, GPU 0,"
        " in flight 3, waiting 1",
        "llamacpp-embeddings FATAL: text-embedding-ada-002 = multilingual-e5-small, 4 slots,"
        " ctx 4096, GPU 0, in flight unknown (no answer on port 8080)",
        "GPU 0 (NVIDIA H200): 41918 of 143771 MiB in use",
    ]


def test_stopped_host_and_a_stale_container_are_said():
    stopped = status_lines(
        DEPLOYED, {"unit": "failed", "container": None, "programs": [], "load": "", "gpus": []}
    )
    assert stopped[0].endswith("; no container") and "service failed" in stopped[0]
    assert stopped[1] == "litellm absent: the proxy, port 28000"
    stale = {**CONTAINER, "Config": {"Image": "localai-llamacpp:old"}}
    lines = status_lines(DEPLOYED, {"unit": "active", "container": stale})
    assert "the container runs localai-llamacpp:old, not the deployed image" in lines[0]
    garbled = status_lines(DEPLOYED, {"container": CONTAINER, "load": "Error: no"})
    assert garbled[2].endswith("in flight unknown (no answer on port 8090)")


def test_the_balancers_view_of_each_engine_is_said():
    """A fleet gateway runs no engine itself: its balancer says how each node's engine is."""
    gateway = {**DEPLOYED, "gpu_mode": "cpu", "engines": []}
    balancer = (
        '[{"alias": "gpt-3.5-turbo", "engine": "10.0.0.11-llamacpp-chat", "status": "UP",'
        ' "in_flight": 5, "queued": 0, "served": 120},'
        ' {"alias": "gpt-3.5-turbo", "engine": "10.0.0.12-llamacpp-chat", "status": "DOWN",'
        ' "in_flight": 0, "queued": 0, "served": 64}]'
    )
    programs = [
        "balancer                         RUNNING   pid 9, uptime 0:09:34",
        "litellm                          RUNNING   pid 10, uptime 0:09:34",
    ]
    lines = status_lines(
        gateway,
        {"unit": "active", "container": CONTAINER, "programs": programs, "balancer": balancer},
    )
    assert lines[1:] == [
        "litellm RUNNING: the proxy, port 28000",
        "balancer RUNNING: one frontend per alias, least connections",
        "balancer gpt-3.5-turbo -> 10.0.0.11-llamacpp-chat: UP, in flight 5, queued 0, served 120",
        "balancer gpt-3.5-turbo -> 10.0.0.12-llamacpp-chat: DOWN, in flight 0, queued 0, served 64",
    ]
    # The balancer program without an answer from its socket: its state, no engine lines.
    quiet = status_lines(gateway, {"container": CONTAINER, "programs": programs})
    assert quiet[2:] == ["balancer RUNNING: one frontend per alias, least connections"]
