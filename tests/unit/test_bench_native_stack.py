"""Unit tests for bench/native_stack.py: argument mapping, model paths, env file, levels.

The GPU phases run only on a GPU host, so every piece that can be wrong without a GPU
(which flag replaces which, where a model file is found, how the per-level runs number their
requests) is checked here, and the process handling against a tiny fake server.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
from project import load

REPO = Path(__file__).resolve().parents[2]


ns = load("native_stack", "bench/native_stack.py")

CHAT = {
    "program": "llamacpp-chat",
    "kind": "chat",
    "model": "Llama-3-ELYZA-JP-8B",
    "alias": "gpt-3.5-turbo",
    "host": "127.0.0.1",
    "port": 8090,
    "model_path": "/models/Llama-3-ELYZA-JP-8B-Q8_0.gguf",
    "args": [
        "--model",
        "/models/Llama-3-ELYZA-JP-8B-Q8_0.gguf",
        "--alias",
        "Llama-3-ELYZA-JP-8B",
        "--host",
        "127.0.0.1",
        "--port",
        "8090",
        "--ctx-size",
        "32768",
        "--parallel",
        "8",
        "--n-gpu-layers",
        "999",
        "--flash-attn",
        "auto",
        "--metrics",
        "--n-predict",
        "1024",
        "--chat-template",
        "llama3",
    ],
    "gpu": None,
}
EMBED = {
    "program": "llamacpp-embeddings",
    "kind": "embedding",
    "model": "multilingual-e5-small",
    "alias": "text-embedding-ada-002",
    "host": "127.0.0.1",
    "port": 8080,
    "model_path": "/models/multilingual-e5-small-q8_0.gguf",
    "args": ["--model", "/models/multilingual-e5-small-q8_0.gguf", "--embeddings", "--metrics"],
    "gpu": None,
}


def test_split_options_pairs_flags_with_values():
    groups = ns.split_options(["--parallel", "8", "--metrics", "--seed", "-1", "--x=1", "--y"])
    assert groups == [["--parallel", "8"], ["--metrics"], ["--seed", "-1"], ["--x=1"], ["--y"]]


def test_override_replaces_long_and_short_spellings():
    out = ns.override_args(CHAT["args"], ["-np", "32", "--ctx-size", "131072", "-fa", "on"])
    assert out.count("32768") == 0
    assert ns.option_value(out, "--parallel") == "32"
    assert ns.option_value(out, "--ctx-size") == "131072"
    assert ns.option_value(out, "--flash-attn") == "on"
    # untouched options keep their place and value
    assert out[:4] == ["--model", "/models/Llama-3-ELYZA-JP-8B-Q8_0.gguf", "--alias", CHAT["model"]]
    assert "--metrics" in out


def test_override_adds_new_flags_and_drops_boolean_opposites():
    out = ns.override_args(["--no-kv-unified", "--metrics"], ["--kv-unified", "--backend-sampling"])
    assert out == ["--metrics", "--kv-unified", "--backend-sampling"]


def test_override_keeps_the_last_of_repeated_extra_flags():
    out = ns.override_args(["--host", "h"], ["--threads-http", "8", "-cb", "--threads-http", "2"])
    assert out == ["--host", "h", "-cb", "--threads-http", "2"]
    assert ns.override_args(["-cb"], ["--cont-batching", "-nocb"]) == ["-nocb"]


def test_parse_model_map_refuses_items_without_a_path():
    assert ns.parse_model_map(["chat=/tmp/m/a.gguf", "x=/y=z"]) == {
        "chat": "/tmp/m/a.gguf",
        "x": "/y=z",
    }
    for bad in ("chat", "=/a", "chat="):
        with pytest.raises(ValueError, match="KEY=PATH"):
            ns.parse_model_map([bad])


@pytest.mark.parametrize(
    "key",
    ["llamacpp-chat", "Llama-3-ELYZA-JP-8B", "gpt-3.5-turbo", "Llama-3-ELYZA-JP-8B-Q8_0.gguf"],
)
def test_model_map_accepts_every_name_of_an_engine(key):
    assert ns.resolve_model_path(CHAT, {key: "/tmp/m/x.gguf"}, None) == "/tmp/m/x.gguf"


def test_model_map_by_kind_and_specific_key_wins():
    mapping = {"chat": "/by/kind.gguf", "llamacpp-chat": "/by/program.gguf"}
    assert ns.resolve_model_path(CHAT, mapping, None) == "/by/program.gguf"
    assert ns.resolve_model_path(CHAT, {"chat": "/by/kind.gguf"}, None) == "/by/kind.gguf"


def test_models_dir_maps_the_container_mount():
    path = ns.resolve_model_path(EMBED, {"chat": "/x"}, "/srv/models")
    assert path == "/srv/models/multilingual-e5-small-q8_0.gguf"


def test_unmapped_model_fails_naming_the_keys():
    with pytest.raises(ValueError, match=r"llamacpp-embeddings.*embedding"):
        ns.resolve_model_path(EMBED, {"chat": "/x"}, None)


def test_engine_command_rewrites_only_the_model_and_applies_overrides():
    cmd = ns.engine_command(CHAT, "/opt/ls", {"chat": "/tmp/m/l.gguf"}, None, ["--parallel", "4"])
    assert cmd[0] == "/opt/ls"
    assert ns.option_value(cmd[1:], "--model") == "/tmp/m/l.gguf"
    assert ns.option_value(cmd[1:], "--parallel") == "4"
    assert ns.option_value(cmd[1:], "--port") == "8090"
    assert len(cmd) == len(CHAT["args"]) + 1


def test_replace_model_adds_a_missing_model_and_handles_short_flag():
    assert ns.replace_model(["-m", "a", "--x"], "b") == ["-m", "b", "--x"]
    assert ns.replace_model(["--x"], "b") == ["--model", "b", "--x"]


def test_select_engine_by_kind_and_unknown_names_known_ones():
    assert ns.select_engine([CHAT, EMBED], "embedding") is EMBED
    with pytest.raises(ValueError, match=r"known:.*gpt-3\.5-turbo"):
        ns.select_engine([CHAT, EMBED], "rerank")


def test_engine_env_pins_a_replica_to_its_gpu_like_programs_conf():
    base = {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert ns.engine_env(CHAT | {"gpu": 1}, base)["CUDA_VISIBLE_DEVICES"] == "1"
    assert ns.engine_env(CHAT | {"gpu": 0}, base)["CUDA_VISIBLE_DEVICES"] == "0"
    # No pin (single, split, cpu): the engine sees what the caller sees.
    assert ns.engine_env(CHAT | {"gpu": None}, base) == base


def test_parse_env_file_takes_values_literally():
    text = "#\n# Ansible managed\n#\nLITELLM_MASTER_KEY=sk-a=b\n\nNO_PROXY=127.0.0.1,localhost\n"
    assert ns.parse_env_file(text) == {
        "LITELLM_MASTER_KEY": "sk-a=b",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def test_parse_levels():
    assert ns.parse_levels("1:4, 8:32,32") == [(1, 4), (8, 32), (32, None)]
    for bad in ("", "0:4", "1:0"):
        with pytest.raises(ValueError):
            ns.parse_levels(bad)


def test_proxy_command_runs_the_module_with_the_config():
    cmd = ns.proxy_command("/usr/bin/python3", Path("/c"), 28000, 2)
    assert cmd[:3] == ["/usr/bin/python3", "-m", "litellm.proxy.proxy_cli"]
    assert ns.option_value(cmd[3:], "--config") == "/c/litellm.yaml"
    assert ns.option_value(cmd[3:], "--num_workers") == "2"


def test_shifted_run_level_moves_request_numbers():
    seen = []

    def fake_run_level(make_client, one, concurrency, requests, first_index=0):
        seen.append((concurrency, requests, first_index))
        return [], 0.0

    shifted = ns.shifted_run_level(fake_run_level, 100)
    shifted(None, None, 8, 32, 1_000_000)
    shifted(None, None, 8, 32, first_index=0)
    assert seen == [(8, 32, 1_000_100), (8, 32, 100)]


def test_loadgen_levels_never_repeat_a_prompt(monkeypatch):
    loadgen = load("loadgen", "bench/loadgen.py")
    ranges = []

    def fake_run_level(make_client, one, concurrency, requests, first_index=0):
        ranges.append(range(first_index, first_index + requests))
        return [], 1.0

    monkeypatch.setattr(loadgen, "run_level", fake_run_level)
    monkeypatch.setitem(sys.modules, "loadgen", loadgen)
    args = ns.build_parser().parse_args(
        ["loadgen", "--levels", "1:4,8:32,32:64", "--", "--url", "http://127.0.0.1:9"]
    )
    ns.cmd_loadgen(args)
    numbers = [n for r in ranges for n in r]
    assert len(ranges) == 6  # a warm-up and a measured run per level
    assert len(numbers) == len(set(numbers)) == 4 + 32 + 64 + 1 + 8 + 32
    assert loadgen.run_level is fake_run_level  # restored


def sample(t, ticks, host_busy, conns=None, gpu=None):
    return {"t": t, "ticks": ticks, "host": [host_busy, 0], "conns": conns or {}, "gpu": gpu or []}


def test_summarize_watch_reads_cpu_peaks_connections_and_gpus():
    samples = [
        sample(0.0, {"engine": 0, "litellm-w0": 0}, 0, {"litellm-w0": 1}, [50.0, 0.0]),
        sample(1.0, {"engine": 100, "litellm-w0": 10}, 200, {"litellm-w0": 3, "litellm-w1": 2}),
        sample(2.0, {"engine": 150, "litellm-w0": 100}, 400, {"litellm-w0": 2}, [70.0, 10.0]),
    ]
    summary = ns.summarize_watch(samples, clk_tck=100)
    engine, worker = summary["processes"]["engine"], summary["processes"]["litellm-w0"]
    assert (engine["cpu_s"], engine["mean_pct"], engine["peak_pct"]) == (1.5, 75.0, 100.0)
    assert (worker["cpu_s"], worker["mean_pct"], worker["peak_pct"]) == (1.0, 50.0, 90.0)
    assert summary["host_busy_cores"] == 2.0
    assert summary["conns_per_worker"] == {"litellm-w0": 3, "litellm-w1": 2}  # the fullest
    assert summary["gpu_util_mean_pct"] == [60.0, 5.0]
    line = ns.format_watch([{"setup": "s", "concurrency": 4, "watch": summary}])
    assert "litellm-w0=50/90%" in line


def test_summarize_watch_reads_each_engines_decode_calls_and_batch():
    def metrics(calls, per_call, processing, predicted):
        text = (
            "# HELP llamacpp:n_decode_total Total number of llama_decode() calls\n"
            f"llamacpp:n_decode_total {calls}\n"
            f"llamacpp:n_busy_slots_per_decode {per_call}\n"
            f"llamacpp:requests_processing {processing}\n"
            f"llamacpp:tokens_predicted_total {predicted}\n"
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 1\n'
        )
        return ns.parse_metrics(text)

    samples = [
        dict(sample(0.0, {}, 0), engines={"chat-0": metrics(100, 2.0, 4, 30)}),
        dict(sample(1.0, {}, 0), engines={"chat-0": metrics(150, 4.0, 9, 500)}),
        dict(sample(2.0, {}, 0), engines={"chat-0": metrics(200, 5.0, 8, 830)}),
    ]
    engine = ns.summarize_watch(samples, clk_tck=100)["engines"]["chat-0"]
    # 100 calls in 2 s; busy slots 200 -> 1000: 8 streams per call on average
    assert engine == {
        "decode_calls_per_s": 50.0,
        "mean_batch": 8.0,
        "requests_processing_max": 9,
        "tokens_predicted": 800,
    }


def test_summarize_watch_needs_two_samples():
    assert ns.summarize_watch([sample(0.0, {}, 0)], clk_tck=100) == {"samples": 1}


def test_connections_by_pid_counts_the_server_side_of_a_port():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    accepted = [server.accept()[0] for _ in clients]
    try:
        me = os.getpid()
        assert ns.connections_by_pid(port, [me]) == {me: 2}  # the clients' ports are others
        assert ns.connections_by_pid(port, []) == {}
    finally:
        for sock in (*clients, *accepted, server):
            sock.close()


def test_loadgen_watch_records_each_level_of_the_started_processes(monkeypatch, tmp_path):
    loadgen = load("loadgen", "bench/loadgen.py")
    monkeypatch.setattr(loadgen, "main", lambda argv: time.sleep(0.3) or 0)
    monkeypatch.setitem(sys.modules, "loadgen", loadgen)
    state = tmp_path / "state.json"
    ns.save_state(state, [{"name": "engine", "pid": os.getpid(), "marker": ""}])
    out = tmp_path / "watch.jsonl"
    watch = ["--watch", str(out), "--state", str(state)]
    args = ns.build_parser().parse_args(
        ["loadgen", "--levels", "1:4,8:32", *watch, "--", "--label", "replicas via proxy"]
    )
    assert ns.cmd_loadgen(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["setup"], r["concurrency"]) for r in rows] == [
        ("replicas via proxy", 1),
        ("replicas via proxy", 8),
    ]
    assert all(r["watch"]["samples"] >= 2 and "engine" in r["watch"]["processes"] for r in rows)


def test_format_rows_shows_only_present_columns():
    rows = [
        {"setup": "seed", "mode": "chat", "concurrency": 8, "aggregate_tok_s": 539.0},
        {"setup": "project", "mode": "chat", "concurrency": 8, "aggregate_tok_s": 900.5},
    ]
    table = ns.format_rows(rows).splitlines()
    assert table[0].split() == ["setup", "mode", "clients", "tok/s"]
    assert table[2].split() == ["project", "chat", "8", "900.5"]


def test_serve_and_stop_a_fake_server(tmp_path):
    """serve waits for /health, records the process; stop ends its process group."""
    server = tmp_path / "fake-llama-server"
    server.write_text(
        "#!" + sys.executable + "\n"
        "import sys\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
        "class H(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')\n"
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        "HTTPServer(('127.0.0.1', port), H).serve_forever()\n"
    )
    server.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tmp_path / "state.json"
    common = ["--state", str(state), "--log-dir", str(tmp_path / "logs")]
    rc = ns.main(
        ["serve", *common, "--llama-server", str(server), "--port", str(port), "--timeout", "20"]
    )
    assert rc == 0
    procs = json.loads(state.read_text())["processes"]
    assert ns.alive(procs[0]["pid"], procs[0]["marker"])
    assert ns.port_busy(f"http://127.0.0.1:{port}")
    assert ns.main(["stop", "--state", str(state), "--grace", "5"]) == 0
    assert not ns.alive(procs[0]["pid"], procs[0]["marker"])
    assert json.loads(state.read_text())["processes"] == []


def test_stack_watch_asks_no_gpu_where_there_is_no_nvidia_smi(monkeypatch):
    monkeypatch.setattr(ns.shutil, "which", lambda name: None)
    monkeypatch.setattr(ns, "gpu_utilization", lambda: pytest.fail("nvidia-smi asked"))
    with ns.StackWatch({"self": os.getpid()}, interval=0.05) as watch:
        time.sleep(0.12)
    assert len(watch.samples) >= 2
    assert all("gpu" not in s for s in watch.samples)
    assert "gpu_util_mean_pct" not in watch.summary()
