"""bench/fake_upstream.py and bench/proxy_relay.py: the stream the proxy is measured against,
and the config it is measured with."""

from __future__ import annotations

import json
import threading

import pytest
from project import load

fake = load("bench_fake_upstream", "bench/fake_upstream.py")
relay = load("bench_proxy_relay", "bench/proxy_relay.py")
# Its own name: test_bench_loadgen's module is "loadgen", and results sent back from forked
# driver processes are unpickled against the module of that name.
loadgen = load("bench_loadgen_for_relay", "bench/loadgen.py")


@pytest.fixture
def upstream():
    server = fake.FakeServer(("127.0.0.1", 0), 0.0, "Llama-3-ELYZA-JP-8B")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fake_upstream_streams_every_token_and_the_usage(upstream, tmp_path):
    out = tmp_path / "rows.jsonl"
    argv = ["--url", upstream, "--concurrency", "2", "--requests", "4", "--max-tokens", "17"]
    assert loadgen.main([*argv, "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["ok"] == 4 and row["completion_tokens"] == 4 * 17 and row["errors"] == 0


RENDERED = {
    "model_list": [
        {
            "model_name": "gpt-3.5-turbo",
            "litellm_params": {"model": "openai/chat", "api_base": "http://127.0.0.1:8090/v1"},
            "model_info": {"mode": "chat"},
        },
        {
            "model_name": "text-embedding-ada-002",
            "litellm_params": {"model": "openai/e5", "api_base": "http://127.0.0.1:8080/v1"},
            "model_info": {"mode": "embedding"},
        },
    ],
    "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 2},
}


def test_merged_config_repeats_the_chat_deployment_per_upstream_and_merges_settings():
    ups = ["http://127.0.0.1:18090/v1", "http://127.0.0.1:18091/v1"]
    cfg = relay.merged_config(RENDERED, relay.SETUPS["no_retries"], ups)
    assert [m["litellm_params"]["api_base"] for m in cfg["model_list"]] == ups
    assert {m["model_name"] for m in cfg["model_list"]} == {"gpt-3.5-turbo"}
    assert cfg["router_settings"] == {"routing_strategy": "simple-shuffle", "num_retries": 0}
    assert cfg["litellm_settings"] == {"num_retries": 0}
    assert RENDERED["model_list"][0]["litellm_params"]["api_base"].endswith(":8090/v1")


def test_merged_config_chat_params_change_every_chat_deployment_only():
    ups = ["http://127.0.0.1:18090/v1", "http://127.0.0.1:18091/v1"]
    cfg = relay.merged_config(RENDERED, relay.SETUPS["hosted_vllm"], ups)
    models = [m["litellm_params"]["model"] for m in cfg["model_list"]]
    assert models == ["hosted_vllm/Llama-3-ELYZA-JP-8B"] * 2
    assert "chat_params" not in cfg
    assert RENDERED["model_list"][0]["litellm_params"]["model"].startswith("openai/")
