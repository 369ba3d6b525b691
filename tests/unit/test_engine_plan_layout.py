"""Unit tests of the GPU layout of engine_plan: replicas, split, single, auto, fleet."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import engine_plan
from ansible_collections.localai.llamacpp.plugins.plugin_utils.model_list import models_validate

GB = 1_000_000_000
P40 = {"name": "Tesla P40", "compute_cap": "6.1", "memory_mib": 24576}


def gpus(count: int, memory_mib: int = 24576) -> list[dict]:
    """nvidia_toolkit_gpus as the role reports it."""
    return [dict(P40, index=i, memory_mib=memory_mib) for i in range(count)]


def models(chat_gb: float = 8.5) -> list[dict]:
    """A chat model of chat_gb GB and a small embedding model (sizes as hints)."""
    return [
        {
            "name": "Llama-3-ELYZA-JP-8B",
            "alias": "gpt-3.5-turbo",
            "kind": "chat",
            "file": "chat.gguf",
            "url": "https://example.org/o/r/resolve/main/chat.gguf",
            "size_gb": chat_gb,
        },
        {
            "name": "e5",
            "alias": "text-embedding-ada-002",
            "kind": "embedding",
            "file": "e5.gguf",
            "url": "https://example.org/o/r/resolve/main/e5.gguf",
            "size_gb": 0.12,
        },
    ]


def flag(args: list[str], name: str) -> str:
    """Value following a flag."""
    return args[args.index(name) + 1]


def chats(plan: list[dict]) -> list[dict]:
    return [e for e in plan if e["kind"] == "chat"]


def test_replicas_one_engine_per_gpu_pinned_with_distinct_ports_and_names():
    plan = engine_plan(models(), "gpu", layout="replicas", gpus=gpus(3))
    chat = chats(plan)
    assert [e["program"] for e in chat] == ["llamacpp-chat-0", "llamacpp-chat-1", "llamacpp-chat-2"]
    assert [e["port"] for e in chat] == [8090, 8091, 8092]
    assert [e["gpu"] for e in chat] == [0, 1, 2]
    assert [flag(e["args"], "--port") for e in chat] == ["8090", "8091", "8092"]
    assert {e["alias"] for e in chat} == {"gpt-3.5-turbo"}
    assert all("--tensor-split" not in e["args"] for e in chat)
    embed = [e for e in plan if e["kind"] == "embedding"]
    assert len(embed) == 1 and embed[0]["gpu"] == 0 and embed[0]["program"] == "llamacpp-embeddings"


def test_replicas_of_two_chat_models_keep_ports_unique():
    m = models()
    m.append(dict(m[0], name="Second", alias="gpt-4", file="second.gguf", size_gb=1))
    plan = engine_plan(m, "gpu", layout="replicas", gpus=gpus(2))
    assert [(e["program"], e["port"], e["gpu"]) for e in chats(plan)] == [
        ("llamacpp-chat-0", 8090, 0),
        ("llamacpp-chat-1", 8091, 1),
        ("llamacpp-chat-second-0", 8092, 0),
        ("llamacpp-chat-second-1", 8093, 1),
    ]


def test_split_one_engine_across_gpus_in_proportion_to_memory():
    g = [*gpus(2), dict(P40, index=2, memory_mib=12288)]
    plan = engine_plan(models(40), "gpu", layout="split", gpus=g)
    (chat,) = chats(plan)
    assert chat["gpu"] is None and chat["program"] == "llamacpp-chat"
    assert flag(chat["args"], "--split-mode") == "layer"
    assert flag(chat["args"], "--tensor-split") == "24576,24576,12288"
    embed = plan[1]
    assert embed["gpu"] == 0 and "--tensor-split" not in embed["args"]


def test_single_pins_everything_to_the_first_gpu():
    plan = engine_plan(models(), "gpu", layout="single", gpus=gpus(3))
    assert [(e["program"], e["gpu"]) for e in plan] == [
        ("llamacpp-chat", 0),
        ("llamacpp-embeddings", 0),
    ]


def test_auto_picks_replicas_when_the_model_fits_each_gpu():
    plan = engine_plan(models(8.5), "gpu", gpus=gpus(3))
    assert [e["gpu"] for e in chats(plan)] == [0, 1, 2]


def test_auto_picks_split_when_the_model_fits_only_all_gpus_together():
    plan = engine_plan(models(40), "gpu", gpus=gpus(3))
    (chat,) = chats(plan)
    assert "--tensor-split" in chat["args"]


def test_auto_on_one_gpu_is_single_and_needs_no_size():
    m = models()
    for entry in m:
        entry.pop("size_gb")
    plan = engine_plan(m, "gpu", gpus=gpus(1))
    assert [e["gpu"] for e in plan] == [0, 0]


def test_auto_without_sizes_on_several_gpus_asks_for_a_hint():
    m = models()
    m[0].pop("size_gb")
    with pytest.raises(AnsibleFilterError, match=r"localai_gpu_layout is 'auto'.*size_gb"):
        engine_plan(m, "gpu", gpus=gpus(2))


def test_sizes_from_the_models_role_win_over_hints():
    m = models(1)
    plan = engine_plan(m, "gpu", gpus=gpus(3), sizes={"chat.gguf": 40 * GB})
    assert "--tensor-split" in chats(plan)[0]["args"]


def test_lock_file_entries_give_sizes_too():
    m = models(1)
    lock = {"chat.gguf": {"sha256": "ab" * 32, "size": 40 * GB}}
    plan = engine_plan(m, "gpu", gpus=gpus(3), sizes=lock)
    assert "--tensor-split" in chats(plan)[0]["args"]


def test_src_files_are_measured_on_the_controller(tmp_path):
    big = tmp_path / "chat.gguf"
    with big.open("wb") as handle:
        handle.truncate(30 * GB)  # sparse: 30 GB that take no disk
    m = models()
    m[0].pop("size_gb")
    m[0].pop("url")
    m[0]["src"] = str(big)
    plan = engine_plan(m, "gpu", gpus=gpus(2))
    assert "--tensor-split" in chats(plan)[0]["args"]


def test_margin_is_documented_and_applied():
    # 20 GB file: 19073 MiB * 1.3 + 1024 = 25818 MiB > 24576: no replicas on P40s.
    plan = engine_plan(models(20), "gpu", gpus=gpus(2))
    assert "--tensor-split" in chats(plan)[0]["args"]
    # gpu_memory_gb replaces the estimate.
    m = models(20)
    m[0]["gpu_memory_gb"] = 22
    plan = engine_plan(m, "gpu", gpus=gpus(2))
    assert [e["gpu"] for e in chats(plan)] == [0, 1]


@pytest.mark.parametrize(
    ("layout", "chat_gb", "count"),
    [("replicas", 20, 2), ("single", 20, 2), ("split", 60, 2)],
)
def test_a_layout_that_cannot_fit_fails_naming_the_variable(layout, chat_gb, count):
    with pytest.raises(AnsibleFilterError, match=rf"localai_gpu_layout is '{layout}'.*fit"):
        engine_plan(models(chat_gb), "gpu", layout=layout, gpus=gpus(count))


def test_auto_fails_when_nothing_fits():
    with pytest.raises(AnsibleFilterError, match=r"localai_gpu_layout is 'auto' \(replicas"):
        engine_plan(models(100), "gpu", gpus=gpus(2))


def test_bad_layout_and_cpu_replicas_are_refused():
    with pytest.raises(AnsibleFilterError, match="localai_gpu_layout is 'tensor'"):
        engine_plan(models(), "gpu", layout="tensor")
    with pytest.raises(AnsibleFilterError, match="localai_cpu_replicas"):
        engine_plan(models(), "cpu", cpu_replicas=0)


def test_cpu_replicas_run_several_unpinned_chat_engines():
    plan = engine_plan(models(), "cpu", layout="replicas", cpu_replicas=2)
    chat = chats(plan)
    assert [(e["program"], e["port"], e["gpu"]) for e in chat] == [
        ("llamacpp-chat-0", 8090, None),
        ("llamacpp-chat-1", 8091, None),
    ]
    assert all(flag(e["args"], "--n-gpu-layers") == "0" for e in plan)
    assert len(plan) == 3


def test_cpu_mode_ignores_gpus_and_defaults_to_one_engine():
    plan = engine_plan(models(), "cpu", gpus=gpus(2))
    assert [(e["program"], e["gpu"]) for e in plan] == [
        ("llamacpp-chat", None),
        ("llamacpp-embeddings", None),
    ]


def test_no_gpu_list_keeps_the_old_plan():
    plan = engine_plan(models(), "gpu")
    assert [(e["program"], e["gpu"]) for e in plan] == [
        ("llamacpp-chat", None),
        ("llamacpp-embeddings", None),
    ]


def test_fleet_node_listens_everywhere_and_advertises_its_address():
    plan = engine_plan(models(), "cpu", host="10.0.0.11", listen_host="0.0.0.0", cpu_replicas=2)
    assert {e["host"] for e in plan} == {"10.0.0.11"}
    assert {flag(e["args"], "--host") for e in plan} == {"0.0.0.0"}
    assert all("--api-key" not in e["args"] for e in plan)


def test_size_hints_are_validated():
    m = models()
    m[0]["size_gb"] = "big"
    m[1]["gpu_memory_gb"] = -1
    errors = models_validate(m)
    assert any("'size_gb'" in e for e in errors)
    assert any("'gpu_memory_gb'" in e for e in errors)


def embeddings(plan: list[dict]) -> list[dict]:
    return [e for e in plan if e["kind"] == "embedding"]


def test_engines_per_gpu_repeats_the_embedding_engine_on_the_first_gpu():
    m = models()
    m[1]["engines_per_gpu"] = 4
    plan = engine_plan(m, "gpu", layout="replicas", gpus=gpus(2))
    embed = embeddings(plan)
    assert [(e["program"], e["port"], e["gpu"]) for e in embed] == [
        (f"llamacpp-embeddings-{i}", 8080 + i, 0) for i in range(4)
    ]
    assert [flag(e["args"], "--port") for e in embed] == ["8080", "8081", "8082", "8083"]
    assert {e["alias"] for e in embed} == {"text-embedding-ada-002"}
    assert [e["gpu"] for e in chats(plan)] == [0, 1]


def test_engines_per_gpu_of_a_chat_model_with_replicas_fills_each_gpu_in_turn():
    m = models()
    m[0]["engines_per_gpu"] = 2
    plan = engine_plan(m, "gpu", layout="replicas", gpus=gpus(2, 81559))
    assert [(e["program"], e["port"], e["gpu"]) for e in chats(plan)] == [
        ("llamacpp-chat-0", 8090, 0),
        ("llamacpp-chat-1", 8091, 0),
        ("llamacpp-chat-2", 8092, 1),
        ("llamacpp-chat-3", 8093, 1),
    ]


def test_engines_per_gpu_counts_in_the_memory_fit():
    m = models()
    m[1].update(engines_per_gpu=8, gpu_memory_gb=3)
    # 8.5 GB chat (~11 GiB by the estimate) fits a 24 GiB card alone, not with 8 x 3 GB more.
    with pytest.raises(AnsibleFilterError, match="GPU 0 has 24576 MiB but needs"):
        engine_plan(m, "gpu", layout="single", gpus=gpus(1))
    m[1]["engines_per_gpu"] = 2
    assert len(embeddings(engine_plan(m, "gpu", layout="single", gpus=gpus(1)))) == 2


def test_engines_per_gpu_is_refused_for_a_split_chat_model():
    m = models(40)
    m[0]["engines_per_gpu"] = 2
    with pytest.raises(AnsibleFilterError, match=r"engines_per_gpu: 2 .* split"):
        engine_plan(m, "gpu", layout="split", gpus=gpus(2))


def test_engines_per_gpu_is_ignored_on_a_cpu_host():
    m = models()
    m[1]["engines_per_gpu"] = 4
    plan = engine_plan(m, "cpu")
    assert [e["program"] for e in embeddings(plan)] == ["llamacpp-embeddings"]


@pytest.mark.parametrize("value", [0, 9, "4", True])
def test_engines_per_gpu_out_of_range_names_the_field(value):
    m = models()
    m[1]["engines_per_gpu"] = value
    errors = models_validate(m)
    assert len(errors) == 1 and "field 'engines_per_gpu'" in errors[0] and "fix:" in errors[0]
