"""Unit tests of the engine sizes: a chat model's `auto` slots, context and GPU memory.

The default model list is read from group_vars/all/models.yml, so these tests say what the
defaults do on the cards people have: 16-24 GB (T4, L4, A10, P40, RTX 3090/4090) and large ones
(A100, H100, H200), several GPUs and CPU hosts.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import (
    MAX_GPU_SLOTS,
    _kv_bytes_per_token,
    engine_plan,
)
from ansible_collections.localai.llamacpp.plugins.plugin_utils.model_list import models_validate
from project import default_models

MIB = 1048576
SLOT = 3072 + 1024  # the default chat entry's prompt_tokens + max_tokens
KV = 131072  # Llama-3-8B, f16: 32 layers x 8 KV heads x 128 x 2 x 2 bytes


def defaults() -> list[dict]:
    """localai_models as group_vars/all/models.yml ships it."""
    return default_models()


def gpus(memory_mib: int, count: int = 1) -> list[dict]:
    """nvidia_toolkit_gpus for `count` identical cards."""
    return [{"index": i, "name": "GPU", "memory_mib": memory_mib} for i in range(count)]


def flag(args: list[str], name: str) -> str:
    """Value following a flag."""
    return args[args.index(name) + 1]


def chats(plan: list[dict]) -> list[dict]:
    return [e for e in plan if e["kind"] == "chat"]


def test_the_default_entry_leaves_the_sizes_to_the_plan():
    chat = defaults()[0]
    assert (chat["parallel"], chat["ctx_size"], chat["gpu_memory_gb"]) == ("auto",) * 3
    assert chat["kv_bytes_per_token"] == KV
    assert round(chat["size_gb"] * 1e9) == 8_540_770_592  # the Q8_0 file's published size
    assert chat["prompt_tokens"] + chat["max_tokens"] == SLOT


# (card, nvidia-smi memory.total in MiB, slots). Slots: (memory - 5% - 953 MiB embedding engine
# - 8,146 MiB weights - 1,024 MiB reserve) // 512 MiB per 4,096-token slot, at most 64.
CARDS = [
    ("Tesla T4 16 GB", 15360, 8),
    ("NVIDIA L4 24 GB", 23034, 22),
    ("NVIDIA A10 24 GB", 23028, 22),
    ("Tesla P40 24 GB", 24576, 25),
    ("GeForce RTX 3090 24 GB", 24576, 25),
    ("GeForce RTX 4090 24 GB", 24564, 25),
    ("A100 40 GB", 40960, 56),
    ("A100 80 GB", 81920, 64),
    ("H100 80 GB", 81559, 64),
    ("H200 141 GB", 143771, 64),
]


@pytest.mark.parametrize(("card", "memory", "slots"), CARDS, ids=[c[0] for c in CARDS])
def test_defaults_serve_on_one_card_and_fit(card, memory, slots):
    plan = engine_plan(defaults(), "gpu", gpus=gpus(memory))
    (chat,) = chats(plan)
    (embed,) = [e for e in plan if e["kind"] == "embedding"]
    assert (chat["parallel"], chat["ctx_size"]) == (slots, slots * SLOT), chat["sizing"]
    assert flag(chat["args"], "--parallel") == str(slots)
    assert flag(chat["args"], "--ctx-size") == str(slots * SLOT)
    assert chat["ctx_size"] // chat["parallel"] >= SLOT  # the context rule
    assert chat["gpu"] == embed["gpu"] == 0 and "--tensor-split" not in chat["args"]
    # It fits: weights + KV cache + reserve of the chat engine, the embedding engine's 1 GB,
    # within the card less the 5 % kept free.
    need = -(-8_540_770_592 // MIB) + slots * SLOT * KV // MIB + 1024
    assert need + int(1e9 / MIB) <= memory * 0.95
    assert chat["gpu_memory_gb"] == round(need * MIB / 1e9, 1)
    assert "auto:" in chat["sizing"] and f"{memory} MiB" in chat["sizing"]


def test_large_cards_are_capped_at_64_slots_and_say_so():
    (chat,) = chats(engine_plan(defaults(), "gpu", gpus=gpus(143771)))
    assert chat["parallel"] == MAX_GPU_SLOTS == 64
    assert "64 is the most auto gives" in chat["sizing"]


def test_three_p40s_get_one_engine_per_card_not_a_split():
    plan = engine_plan(defaults(), "gpu", gpus=gpus(24576, 3))
    chat = chats(plan)
    assert [e["gpu"] for e in chat] == [0, 1, 2]
    assert all("--tensor-split" not in e["args"] for e in chat)
    # Sized by the tightest card (GPU 0 also holds the embedding engine): the same on each.
    assert {(e["parallel"], e["ctx_size"]) for e in chat} == {(25, 25 * SLOT)}
    assert "the tightest GPU set, GPU 0" in chat[0]["sizing"]


def test_cpu_hosts_keep_8_slots_of_4096_tokens():
    plan = engine_plan(defaults(), "cpu", gpus=gpus(24576))
    chat = chats(plan)[0]
    assert (chat["parallel"], chat["ctx_size"]) == (8, 32768)
    assert chat["gpu_memory_gb"] is None and chat["gpu"] is None
    assert flag(chat["args"], "--n-gpu-layers") == "0"
    assert chat["sizing"] == "auto on a CPU host: 8 slots"


def test_split_sizes_one_engine_from_all_cards_together():
    plan = engine_plan(defaults(), "gpu", layout="split", gpus=gpus(15360, 2))
    (chat,) = chats(plan)
    # 2 x 14,592 usable - 953 - 8,146 - 2 x 1,024 reserve = 18,037 MiB -> 35 slots.
    assert chat["parallel"] == 35
    assert "GPUs 0, 1 together" in chat["sizing"]


# --- numbers a user writes win ---------------------------------------------------------------


def with_chat(**fields) -> list[dict]:
    models = defaults()
    models[0].update(fields)
    return models


def test_written_counts_are_kept():
    plan = engine_plan(with_chat(parallel=8, ctx_size=32768), "gpu", gpus=gpus(143771))
    chat = chats(plan)[0]
    assert (chat["parallel"], chat["ctx_size"]) == (8, 32768)
    assert chat["sizing"].startswith("as written in localai_models")
    # The GPU memory estimate follows the KV cache: 8,146 + 4,096 + 1,024 MiB.
    assert chat["gpu_memory_gb"] == round((8146 + 4096 + 1024) * MIB / 1e9, 1)


def test_written_parallel_gives_each_slot_its_share():
    chat = chats(engine_plan(with_chat(parallel=16), "gpu", gpus=gpus(81559)))[0]
    assert (chat["parallel"], chat["ctx_size"]) == (16, 16 * SLOT)


def test_written_context_is_cut_into_slots():
    chat = chats(engine_plan(with_chat(ctx_size=40000), "gpu", gpus=gpus(81559)))[0]
    assert (chat["parallel"], chat["ctx_size"]) == (40000 // SLOT, 40000)


def test_written_gpu_memory_bounds_the_engine():
    chat = chats(engine_plan(with_chat(gpu_memory_gb=13), "gpu", gpus=gpus(81559)))[0]
    # 13 GB = 12,397 MiB - 8,146 weights - 1,024 reserve = 3,227 MiB -> 6 slots.
    assert (chat["parallel"], chat["ctx_size"]) == (6, 6 * SLOT)
    assert chat["gpu_memory_gb"] == 13.0


def test_written_sizes_that_do_not_fit_still_fail_naming_the_layout():
    with pytest.raises(AnsibleFilterError, match=r"localai_gpu_layout is 'single'.*fit"):
        engine_plan(with_chat(parallel=32, ctx_size=131072), "gpu", gpus=gpus(24576))


def test_two_auto_chat_models_share_a_card_with_the_same_slots():
    models = defaults()
    models.insert(1, dict(models[0], name="Second", alias="gpt-4", file="second.gguf"))
    plan = engine_plan(models, "gpu", gpus=gpus(81559))
    chat = chats(plan)
    # (77,482 - 953 - 2 x (8,146 + 1,024)) // (2 x 512) = 56 slots each.
    assert [e["parallel"] for e in chat] == [56, 56]


# --- what auto needs, and what it refuses -----------------------------------------------------


def test_auto_without_a_kv_size_asks_for_one():
    models = defaults()
    del models[0]["kv_bytes_per_token"]
    with pytest.raises(AnsibleFilterError, match="kv_bytes_per_token") as err:
        engine_plan(models, "gpu", gpus=gpus(24576))
    assert "'Llama-3-ELYZA-JP-8B'" in str(err.value) and "fix:" in str(err.value)


def test_auto_without_a_file_size_asks_for_size_gb():
    models = defaults()
    del models[0]["size_gb"]
    with pytest.raises(AnsibleFilterError, match=r"not known yet \(add size_gb"):
        engine_plan(models, "gpu", gpus=gpus(24576))


def test_the_lock_files_size_serves_as_well():
    models = defaults()
    del models[0]["size_gb"]
    lock = {models[0]["file"]: {"sha256": "ab" * 32, "size": 8_540_770_592}}
    plan = engine_plan(models, "gpu", gpus=gpus(24576), sizes=lock)
    assert chats(plan)[0]["parallel"] == 25


def test_a_card_without_a_memory_size_asks_for_numbers():
    with pytest.raises(AnsibleFilterError, match="report no memory size") as err:
        engine_plan(defaults(), "gpu", gpus=gpus(0))
    assert "set parallel, ctx_size and gpu_memory_gb" in str(err.value)


def test_a_card_too_small_for_one_slot_is_refused_with_the_numbers():
    # Two 8 GB cards hold it split (one slot needs weights + 512 MiB + reserves); two 4 GB
    # cards do not.
    plan = engine_plan(defaults(), "gpu", gpus=gpus(8192, 2))
    assert "--tensor-split" in chats(plan)[0]["args"]
    with pytest.raises(AnsibleFilterError, match=r"localai_gpu_layout is 'auto' \(replicas"):
        engine_plan(defaults(), "gpu", gpus=gpus(4096, 2))
    with pytest.raises(AnsibleFilterError, match=r"GPU 0 has 8192 MiB but needs"):
        engine_plan(defaults(), "gpu", gpus=gpus(8192))


@pytest.mark.parametrize(
    ("index", "fields", "needle"),
    [
        (1, {"parallel": "auto"}, "field 'parallel' is 'auto', which only chat models take"),
        (0, {"ctx_size": 2048}, "field 'ctx_size' (2048) holds no slot of"),
        (0, {"kv_bytes_per_token": "128 KiB"}, "field 'kv_bytes_per_token' is '128 KiB'"),
        (0, {"gpu_memory_gb": "lots"}, "field 'gpu_memory_gb' is 'lots'"),
        (1, {"kv_bytes_per_token": 4}, "field 'kv_bytes_per_token' does not apply"),
    ],
)
def test_bad_sizes_are_refused_by_validation(index, fields, needle):
    models = defaults()
    models[index].update(fields)
    errors = models_validate(models)
    assert any(needle in e for e in errors), errors


# --- the KV cache size from a GGUF header ------------------------------------------------------


def gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_file(path: Path, metadata: list[tuple[str, int, object]]) -> Path:
    """A GGUF v3 file with these (key, type, value) pairs and no tensors."""
    body = b""
    for key, kind, value in metadata:
        body += gguf_string(key) + struct.pack("<I", kind)
        if kind == 8:
            body += gguf_string(value)
        elif kind == 9:  # array: (item type, items)
            item, items = value
            body += struct.pack("<IQ", item, len(items))
            for entry in items:
                body += gguf_string(entry) if item == 8 else struct.pack("<I", entry)
        else:
            body += struct.pack("<I", value)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata)) + body)
    return path


LLAMA3_8B = [
    ("general.architecture", 8, "llama"),
    ("general.name", 8, "Llama-3-ELYZA-JP-8B"),
    ("llama.block_count", 4, 32),
    ("llama.embedding_length", 4, 4096),
    ("llama.attention.head_count", 4, 32),
    ("llama.attention.head_count_kv", 4, 8),
    ("tokenizer.ggml.tokens", 9, (8, [f"tok{i}" for i in range(5000)])),
    ("tokenizer.ggml.token_type", 9, (4, list(range(5000)))),
]


def test_kv_size_is_read_from_the_gguf_header(tmp_path):
    path = gguf_file(tmp_path / "chat.gguf", LLAMA3_8B)
    assert _kv_bytes_per_token({"src": str(path)}, stat_src=True) == KV
    assert _kv_bytes_per_token({"src": str(path)}, stat_src=False) is None


def test_key_and_value_lengths_and_per_layer_heads_are_honoured(tmp_path):
    meta = [
        ("general.architecture", 8, "qwen3"),
        ("qwen3.block_count", 4, 4),
        ("qwen3.attention.head_count", 4, 16),
        ("qwen3.attention.head_count_kv", 9, (4, [8, 8, 0, 8])),  # a layer without KV cache
        ("qwen3.attention.key_length", 4, 128),
        ("qwen3.attention.value_length", 4, 64),
    ]
    path = gguf_file(tmp_path / "hybrid.gguf", meta)
    assert _kv_bytes_per_token({"src": str(path)}, stat_src=True) == 24 * (128 + 64) * 2


def test_a_src_file_sizes_the_engine_without_a_kv_field(tmp_path):
    path = gguf_file(tmp_path / "chat.gguf", LLAMA3_8B)
    models = defaults()
    models[0].update(src=str(path), sha256="ab" * 32)
    for field in ("url", "kv_bytes_per_token"):
        del models[0][field]
    plan = engine_plan(models, "gpu", gpus=gpus(24576))
    assert chats(plan)[0]["parallel"] == 25
    assert "KV cache 128 KiB per token" in chats(plan)[0]["sizing"]


def test_the_written_kv_field_wins_over_the_header(tmp_path):
    path = gguf_file(tmp_path / "chat.gguf", LLAMA3_8B)
    entry = {"src": str(path), "kv_bytes_per_token": 65536}
    assert _kv_bytes_per_token(entry, stat_src=True) == 65536


@pytest.mark.parametrize(
    "content", [b"", b"GGUF", b"NOPE" + b"\0" * 20, b"GGUF" + struct.pack("<IQQ", 3, 0, 5)]
)
def test_a_file_that_is_not_gguf_or_is_cut_short_tells_nothing(tmp_path, content):
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    assert _kv_bytes_per_token({"src": str(path)}, stat_src=True) is None
