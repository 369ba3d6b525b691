"""engine: infinity: a Hugging Face model directory served by Infinity (issue 19).

The entry's rules (validation), its files as the models role places them, the engine's command
line, its supervisor program, its LiteLLM route and the image stage that installs it.
"""

from __future__ import annotations

import configparser
import copy
import json
import shlex
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.localai.llamacpp.plugins.filter.balancer import balancer_plan
from ansible_collections.localai.llamacpp.plugins.filter.status import _engine_line
from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import engine_plan
from ansible_collections.localai.llamacpp.plugins.plugin_utils.model_list import (
    model_files,
    models_validate,
)
from project import REPO, container_interface
from test_bundle import render_dockerfile
from test_litellm_config import render

SHA = "9f04ec7a7590123b63a23b49c0bdd67d73115cb66a221fa59bd8f91d119e8ed8"
BASE_URL = (
    "https://huggingface.co/intfloat/multilingual-e5-small/resolve/"
    "614241f622f53c4eeff9890bdc4f31cfecc418b3"
)
CHAT = {
    "name": "chat",
    "alias": "gpt-3.5-turbo",
    "kind": "chat",
    "file": "chat.gguf",
    "src": "/srv/chat.gguf",
    "sha256": SHA,
}


def e5(**fields) -> dict:
    entry = {
        "name": "multilingual-e5-small",
        "alias": "text-embedding-ada-002",
        "kind": "embedding",
        "engine": "infinity",
        "file": "multilingual-e5-small",
        "url": BASE_URL,
        "files": {
            "config.json": "huggingface",
            "model.safetensors": "huggingface",
            "tokenizer.json": SHA,
            "1_Pooling/config.json": "",
        },
    }
    entry.update(fields)
    return {k: v for k, v in entry.items() if v is not None}


def errors(*entries) -> list[str]:
    return models_validate(list(entries))


def test_a_model_directory_is_valid():
    assert errors(CHAT, e5()) == []
    assert errors(CHAT, e5(url=None, src="/srv/e5", files={"config.json": SHA})) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"engine": "vllm"}, "field 'engine' is 'vllm'; fix: one of llama-server, infinity"),
        ({"parallel": 4}, "field 'parallel' is llama-server's, not Infinity's"),
        ({"pooling": "cls"}, "field 'pooling' is llama-server's"),
        ({"sha256": SHA}, "fix: move it into 'files'"),
        ({"files": {}}, "field 'files' is {}; fix: a mapping of every file"),
        ({"files": {"model.safetensors": SHA}}, "lists no config.json"),
        ({"files": {"config.json": SHA, "../etc/passwd": SHA}}, "has the path '../etc/passwd'"),
        ({"file": "e5.gguf"}, "the name of its directory under the models dir"),
        ({"files": {"config.json": "abc"}}, "file 'multilingual-e5-small/config.json'"),
        ({"url": None, "src": "/srv/e5"}, "'huggingface' but the source is not a Hugging Face"),
        ({"url": None}, "fields 'url' and 'src' are both missing"),
        ({"extra_args": ["--port", "1"]}, "sets --port, which the role manages"),
        ({"kind": "chat"}, "field 'files' does not apply to a chat model"),
    ],
)
def test_bad_entries_name_the_field_and_the_fix(fields, message):
    found = errors(CHAT, e5(**fields))
    assert any(message in e for e in found), found
    assert all("localai_models[1]" in e for e in found)


def test_files_only_with_infinity():
    entry = {**CHAT, "kind": "embedding", "name": "e", "alias": "e", "file": "e.gguf"}
    assert any("'files' is for Infinity models only" in e for e in errors(dict(entry, files={})))


def test_the_models_role_gets_one_entry_per_file():
    pieces = model_files([CHAT, e5()])
    assert pieces[0] == CHAT
    assert [p["file"] for p in pieces[1:]] == [
        "multilingual-e5-small/config.json",
        "multilingual-e5-small/model.safetensors",
        "multilingual-e5-small/tokenizer.json",
        "multilingual-e5-small/1_Pooling/config.json",
    ]
    assert pieces[2]["url"] == f"{BASE_URL}/model.safetensors"
    assert pieces[3]["sha256"] == SHA and pieces[4]["sha256"] == ""
    assert {p["piece_of"] for p in pieces[1:]} == {"multilingual-e5-small"}
    # The pieces are a valid list for the models role, with the same rules per file.
    assert models_validate(pieces) == []
    bad = copy.deepcopy(pieces)
    bad[1]["sha256"] = "nope"
    assert any("field 'sha256' is 'nope'" in e for e in models_validate(bad))


def test_src_pieces_point_into_the_controller_directory():
    pieces = model_files([e5(url=None, src="/srv/e5/", files={"config.json": SHA})])
    assert pieces == [
        {
            "name": "multilingual-e5-small",
            "file": "multilingual-e5-small/config.json",
            "src": "/srv/e5/config.json",
            "sha256": SHA,
            "piece_of": "multilingual-e5-small",
        }
    ]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize(
    ("mode", "device", "dtype"), [("cpu", "cpu", "float32"), ("gpu", "cuda", "float16")]
)
def test_the_engine_command(mode, device, dtype):
    gpus = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559}]
    plan = engine_plan(
        [CHAT | {"ctx_size": 4096, "parallel": 4}, e5(batch_size=64)],
        mode,
        gpus=gpus if mode == "gpu" else None,
        stat_src=False,
    )
    engine = plan[1]
    assert engine["program"] == "infinity-embeddings"
    assert engine["engine"] == "infinity"
    assert engine["command"] == "/opt/localai/embed-venv/bin/infinity_emb"
    args = engine["args"]
    assert args[0] == "v2"
    assert flag(args, "--model-id") == "/models/multilingual-e5-small"
    assert flag(args, "--served-model-name") == "multilingual-e5-small"
    assert flag(args, "--port") == "8080" and flag(args, "--url-prefix") == "/v1"
    assert (flag(args, "--device"), flag(args, "--dtype")) == (device, dtype)
    assert flag(args, "--batch-size") == "64" and "--lengths-via-tokenize" in args
    assert engine["tokenizer_file"] == "/models/multilingual-e5-small/tokenizer.json"
    assert (engine["parallel"], engine["ctx_size"], engine["prompt_tokens"]) == (64, 512, 512)
    assert engine["gpu_memory_gb"] == (None if mode == "cpu" else 3.0)
    assert plan[0]["engine"] == "llama-server"


def test_an_alias_has_one_kind_of_engine():
    """A fleet gateway's nodes could serve one alias with both engines: refused."""
    engines = engine_plan([CHAT, e5()], "cpu", stat_src=False)
    twin = {**engines[1], "engine": "llama-server", "host": "10.0.0.2", "tokenizer_file": None}
    with pytest.raises(AnsibleFilterError, match="served by infinity and by llama-server"):
        balancer_plan([*engines, twin])
    frontends = balancer_plan(engines)
    assert frontends[1]["engine"] == "infinity"
    assert frontends[1]["tokenizer_file"] == "/models/multilingual-e5-small/tokenizer.json"


def programs(engines: list[dict]) -> dict[str, dict[str, str]]:
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True)
    env.filters["comment"] = lambda text, decoration="": f"{decoration}{text}"
    env.filters["quote"] = shlex.quote
    env.filters["bool"] = bool
    template = Path(REPO, "roles/stack_service/templates/programs.conf.j2").read_text()
    text = env.from_string(template).render(
        **container_interface(),
        ansible_managed="managed",
        stack_service_engines=engines,
        stack_service_gpu_mode="gpu",
        stack_service_run_proxy=False,
        stack_service_gpu_metrics=False,
        stack_service_log_max_bytes="50MB",
        stack_service_log_backups=5,
    )
    parser = configparser.RawConfigParser(inline_comment_prefixes=None)
    parser.read_string(text)
    return {s.removeprefix("program:"): dict(parser[s]) for s in parser.sections()}


def test_the_program_runs_offline_without_telemetry():
    gpus = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559}]
    plan = engine_plan(
        [CHAT | {"ctx_size": 4096, "parallel": 4}, e5()], "gpu", gpus=gpus, stat_src=False
    )
    found = programs(plan)
    program = found["infinity-embeddings"]
    argv = shlex.split(program["command"])  # as supervisord splits it
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[3:6] == ["infinity-embeddings", "/opt/localai/embed-venv/bin/infinity_emb", "v2"]
    assert argv[-1] == "--lengths-via-tokenize"
    assert (
        'PROMETHEUS_MULTIPROC_DIR="/tmp/localai-prometheus-infinity-embeddings"'
        in (program["environment"])
    )
    environment = program["environment"]
    for setting in (
        'CUDA_VISIBLE_DEVICES="0"',
        'DO_NOT_TRACK="1"',
        'INFINITY_ANONYMOUS_USAGE_STATS="0"',
        'HF_HUB_OFFLINE="1"',
    ):
        assert setting in environment
    assert found["llamacpp-chat"]["command"].startswith("/opt/localai/bin/llama-server ")
    assert "DO_NOT_TRACK" not in found["llamacpp-chat"]["environment"]


def test_the_route_names_the_tokenizer_the_proxy_counts_with():
    frontends = balancer_plan(engine_plan([CHAT, e5()], "cpu", stat_src=False))
    config = yaml.safe_load(render(frontends))
    info = {m["model_name"]: m["model_info"] for m in config["model_list"]}
    assert info["text-embedding-ada-002"]["localai_tokenizer_file"] == (
        "/models/multilingual-e5-small/tokenizer.json"
    )
    assert info["text-embedding-ada-002"]["max_input_tokens"] == 512
    assert "localai_tokenizer_file" not in info["gpt-3.5-turbo"]


def test_the_image_builds_the_venv_only_when_asked():
    without = render_dockerfile()
    assert "embed-venv" not in without
    text = render_dockerfile(
        stack_image_infinity=True,
        stack_image_embed_wheels_dir="/srv/wheels",
        stack_image_torch_index_url="https://download.pytorch.org/whl/cpu",
    )
    assert "AS embed-venv" in text
    assert "--require-hashes --no-deps" in text.split("AS embed-venv", 1)[1]
    assert "--find-links /tmp/embed-wheels" in text
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    assert "COPY --from=embed-venv /opt/localai/embed-venv /opt/localai/embed-venv" in text


def test_the_pinned_set_carries_the_cpu_torch_and_infinity():
    text = (REPO / "roles/stack_image/files/requirements-embed.txt").read_text()
    assert "infinity-emb==0.0.78 \\" in text
    # PyTorch's CPU index publishes this sha256 for torch-2.13.0+cpu-cp311-...x86_64.whl.
    assert (
        "torch==2.13.0+cpu \\\n    --hash=sha256:"
        "6746dbcbeb526eb61330b76b41ff1b4eb848951103a892eeb080dfa2b264667b" in text
    )
    assert json.dumps("numpy==1.26.4")[1:-1] in text  # Infinity 0.0.78 needs numpy < 2


def test_status_speaks_of_batches_not_slots():
    engine = engine_plan([CHAT, e5()], "cpu", stat_src=False)[1]
    line = _engine_line(engine, "RUNNING", [0, 0])
    assert line == (
        "infinity-embeddings RUNNING: text-embedding-ada-002 = multilingual-e5-small, Infinity, "
        "batches of 128, inputs up to 512 tokens"
    )


def test_program_names_count_infinity_apart():
    """Beside a llama-server embedding engine, the first Infinity engine keeps its short name."""
    gguf = {**CHAT, "name": "gguf", "alias": "ada", "kind": "embedding", "file": "e.gguf"}
    plan = engine_plan([CHAT, gguf, e5(), e5(name="e5-b", alias="b", file="b")], "cpu")
    assert [e["program"] for e in plan] == [
        "llamacpp-chat",
        "llamacpp-embeddings",
        "infinity-embeddings",
        "infinity-embeddings-e5-b",
    ]
