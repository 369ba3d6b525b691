"""The engine plan: one engine per model and GPU, its command line, and the GPU fit.

Sizing (chat models; engine_plan): a slot holds prompt_tokens + max_tokens, and
ctx_size is always parallel x that. `parallel: auto` with a number for ctx_size takes as many
slots as ctx_size holds; `ctx_size: auto` with a number for parallel gives each slot its share.
Both 'auto': on a CPU host CPU_SLOTS slots (the KV cache lives in RAM); on a GPU host as many
slots as the GPU memory holds, at most MAX_GPU_SLOTS: each GPU keeps HEADROOM_PCT % free, and
the rest, less the other engines placed there (embeddings on the first GPU), the weights (the
file's size) and RESERVE_MIB per engine, is KV cache at kv_bytes_per_token. A number in
gpu_memory_gb bounds one engine instead of the GPU. Numbers a user writes are kept as written.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.localai.llamacpp.plugins.plugin_utils.model_list import (
    AUTO,
    GPU_LAYOUTS,
    GPU_MODES,
    chat_template_path,
    entry_settings,
    is_infinity,
    is_int,
    is_number,
    models_validate,
    slot_tokens,
)

# The image's program paths (roles/stack_container: stack_container_prefix; a unit test keeps
# these two in step with it).
INFINITY_COMMAND = "/opt/localai/embed-venv/bin/infinity_emb"
LLAMA_SERVER_COMMAND = "/opt/localai/bin/llama-server"


def _engine_args(s: dict[str, Any], host: str, port: int, model_path: str, cpu: bool) -> list[str]:
    """The llama-server command line (without the binary) for one model."""
    args = [
        "--model",
        model_path,
        "--alias",
        s["name"],
        "--host",
        host,
        "--port",
        str(port),
        "--ctx-size",
        str(s["ctx_size"]),
        "--parallel",
        str(s["parallel"]),
        "--n-gpu-layers",
        "0" if cpu else str(s["n_gpu_layers"]),
        "--flash-attn",
        s["flash_attn"],
        "--metrics",
    ]
    for field, flag in (("batch_size", "--batch-size"), ("ubatch_size", "--ubatch-size")):
        if s.get(field) is not None:
            args += [flag, str(s[field])]
    if s["kind"] == "embedding":
        args += ["--embeddings", "--pooling", s["pooling"]]
    else:
        args += ["--n-predict", str(s["max_tokens"])]
        jinja = s.get("jinja")
        if jinja is None:
            # Without a named template the model's own (the GGUF's tokenizer.chat_template) runs
            # on llama-server's Jinja path, the only one that takes `tools` (parsed into OpenAI
            # tool_calls when the template describes tools). A template NAME (llama3,
            # mistral-v1, ...) is one of llama-server's built-in templates, for files that carry
            # none, which only the non-Jinja path knows: with Jinja on the name itself is taken
            # as the template text and every prompt renders as the word "llama3" (seen on ref
            # 0c1e570 with /apply-template).
            jinja = not s.get("chat_template")
        args.append("--jinja" if jinja else "--no-jinja")
        if s.get("chat_template"):
            args += ["--chat-template", s["chat_template"]]
        if s.get("chat_template_file"):
            args += ["--chat-template-file", chat_template_path(model_path)]
    return args + [str(a) for a in s["extra_args"]]


def _infinity_args(
    s: dict[str, Any], host: str, port: int, model_path: str, cpu: bool
) -> list[str]:
    """The Infinity command line (after the binary) for one model directory.

    /v1 prefix: the OpenAI routes (/v1/embeddings, /v1/models) where LiteLLM's openai/
    provider calls them; /health and /metrics stay at the root. --lengths-via-tokenize: the
    queue sorts by tokens, and `usage` counts tokens (by default it counts characters).
    float16 on a GPU (PyTorch's fused attention kernels), float32 on the CPU.
    """
    args = [
        "v2",
        "--model-id",
        model_path,
        "--served-model-name",
        s["name"],
        "--host",
        host,
        "--port",
        str(port),
        "--url-prefix",
        "/v1",
        "--engine",
        "torch",
        "--device",
        "cpu" if cpu else "cuda",
        "--dtype",
        "float32" if cpu else "float16",
        "--batch-size",
        str(s["batch_size"]),
        "--lengths-via-tokenize",
    ]
    return args + [str(a) for a in s["extra_args"]]


def _program(
    kind: str, index: int, name: str, replica: int | None = None, infinity: bool = False
) -> str:
    """Supervisor program name: the first engine of a kind keeps the short, documented name.

    Replicas of one model add their index (llamacpp-chat-0, llamacpp-chat-1, ...); a single
    engine keeps the name it always had, so logs and docs stay valid on one-GPU hosts. An
    Infinity engine is infinity-embeddings (the first one) or infinity-embeddings-<model>.
    """
    base = "llamacpp-chat" if kind == "chat" else "llamacpp-embeddings"
    if infinity:
        base = "infinity-embeddings"
    if index > 0:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        base = f"{base}-{slug}"
    return base if replica is None else f"{base}-{replica}"


# GPU memory of one engine (the `auto` layout, the fit check and the `auto` sizes). The model
# file is loaded whole into GPU memory; on top of it come the KV cache (ctx_size tokens at
# kv_bytes_per_token) and RESERVE_MIB per GPU for the CUDA context and the compute buffers.
# Measured with a Llama-3-8B Q8_0 file (8,146 MiB; bench/results/2026-11-29-h200/NOTES.md, "the
# chat engine's GPU memory against its slots"): 8, 25 and 64 slots of 4,096 tokens took weights
# + KV cache + 164-166 MiB on an H200 (12,406, 21,112 and 41,078 MiB), so the reserve leaves
# about 860 MiB.
# Without a KV size per token the cache is guessed as KV_MARGIN_PCT of the file. An entry's
# gpu_memory_gb replaces the whole estimate. Each GPU also keeps HEADROOM_PCT of its memory free
# (other processes, a display, fragmentation).
KV_MARGIN_PCT = 30
RESERVE_MIB = 1024
HEADROOM_PCT = 5
MIB = 1048576
# `auto` slots. CPU hosts: 8, as before (the KV cache lives in RAM: 8 x 4,096 tokens x 128 KiB = 4
# GiB for the default model). GPU hosts: what the memory holds, at most 64. Measured on an H200
# (bench/results/2026-11-29-h200-slots/NOTES.md, "how many chat slots pay": synthetic Llama-3-8B,
# 256-token replies, direct to the engine, one run): at 64 clients 32 slots gave 1,686 tok/s with a
# median time to first token of 5.1 s (half the clients queue for a slot), 64 slots 1,992 tok/s and
# 0.56 s. Past 64 busy slots the total barely grows: at 128 clients 64, 96 and 128 slots gave 1,859,
# 1,971 and 2,034 tok/s, each reply streaming at 29.8, 21.1 and 16.7 tok/s (the wait for a slot
# turns into slower replies). And slots beyond the busy ones can cost: 96 slots at 64 clients gave
# 1,126 tok/s, the busy slots spread over all 96. So 64 is the ceiling; a user who expects more
# requests at once writes `parallel`.
CPU_SLOTS = 8
MAX_GPU_SLOTS = 64


def _model_size(entry: dict[str, Any], sizes: dict[str, Any] | None, stat_src: bool) -> int | None:
    """Bytes of a model file: the models role's sizes, then the size_gb hint, then `src`.

    None when nothing tells (a download not yet probed): the `auto` layout then refuses to
    guess and asks for a hint or an explicit layout.
    """
    known = (sizes or {}).get(entry["file"])
    if isinstance(known, dict):  # a models.lock.yml entry: {sha256, size, ...}
        known = known.get("size")
    if is_number(known) and known > 0:
        return int(known)
    if is_number(entry.get("size_gb")):
        return round(entry["size_gb"] * 1e9)
    src = entry.get("src")
    if stat_src and isinstance(src, str) and os.path.isfile(src):
        return os.path.getsize(src)
    return None


# GGUF metadata value types (ggml's gguf.h): struct format of the scalar ones.
_GGUF_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_F16_BYTES = 2


def _gguf_metadata(path: str, wanted: tuple[str, ...]) -> dict[str, Any]:
    """The metadata keys ending in one of `wanted` (plus general.architecture) of a GGUF file.

    Reads only the header (key/value pairs come before the tensors), walking past the rest;
    arrays of strings (the vocabulary) are skipped by their lengths. Raises ValueError for a
    file that is not GGUF v2/v3 or is cut short.
    """
    out: dict[str, Any] = {}
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if len(m) < 24 or m[:4] != b"GGUF" or struct.unpack_from("<I", m, 4)[0] not in (2, 3):
            raise ValueError(f"{path} is not a GGUF v2/v3 file")
        (count,) = struct.unpack_from("<Q", m, 16)
        pos = 24

        def take(fmt: str) -> Any:
            nonlocal pos
            (value,) = struct.unpack_from(fmt, m, pos)
            pos += struct.calcsize(fmt)
            return value

        def string() -> str:
            nonlocal pos
            size = take("<Q")
            pos += size
            return m[pos - size : pos].decode("utf-8", "replace")

        def value(kind: int) -> Any:
            if kind == _GGUF_STRING:
                return string()
            if kind != _GGUF_ARRAY:
                return take(_GGUF_SCALARS[kind])
            item, n = take("<I"), take("<Q")
            return [value(item) for _ in range(n)]

        def skip(kind: int) -> None:
            nonlocal pos
            if kind == _GGUF_ARRAY:
                item, n = take("<I"), take("<Q")
                if item in _GGUF_SCALARS:
                    pos += struct.calcsize(_GGUF_SCALARS[item]) * n
                else:
                    for _ in range(n):
                        skip(item)
            elif kind == _GGUF_STRING:
                size = take("<Q")  # first: `pos += take(...)` would read pos before take moves it
                pos += size
            else:
                pos += struct.calcsize(_GGUF_SCALARS[kind])

        try:
            for _ in range(count):
                key, kind = string(), take("<I")
                if key == "general.architecture" or key.endswith(wanted):
                    out[key] = value(kind)
                else:
                    skip(kind)
        except (struct.error, KeyError) as err:
            raise ValueError(f"{path}: GGUF metadata cut short or of an unknown type") from err
    return out


@lru_cache(maxsize=32)
def _gguf_kv_bytes(path: str, mtime_ns: int, size: int) -> int | None:
    """KV cache bytes per token of context (f16 K and V) from a GGUF header; None: not known.

    Keys (llama.cpp's names, prefixed by general.architecture): block_count (layers),
    attention.head_count_kv (per model, or a list per layer), attention.key_length and
    value_length (default: embedding_length / attention.head_count). Bytes per token =
    sum over layers of KV heads x (key_length + value_length) x 2 bytes. Cached by path, mtime
    and size: the plan is evaluated many times in one run.
    """
    del mtime_ns, size  # cache key only
    meta = _gguf_metadata(
        path,
        (
            ".block_count",
            ".embedding_length",
            ".attention.head_count",
            ".attention.head_count_kv",
            ".attention.key_length",
            ".attention.value_length",
        ),
    )
    arch = meta.get("general.architecture")
    field = {k.removeprefix(f"{arch}."): v for k, v in meta.items()}
    layers, heads = field.get("block_count"), field.get("attention.head_count")
    if not (is_int(layers) and layers > 0):
        return None
    kv_heads = field.get("attention.head_count_kv", heads)
    key_length = field.get("attention.key_length")
    if key_length is None and is_int(heads) and heads > 0 and is_int(field.get("embedding_length")):
        key_length = field["embedding_length"] // heads
    value_length = field.get("attention.value_length", key_length)
    if not (is_int(key_length) and is_int(value_length)):
        return None
    per_layer = kv_heads if isinstance(kv_heads, list) else [kv_heads] * layers
    if not all(is_int(h) for h in per_layer):
        return None
    return sum(per_layer) * (key_length + value_length) * _F16_BYTES


def _kv_bytes_per_token(entry: dict[str, Any], stat_src: bool) -> int | None:
    """KV cache bytes per token: the entry's kv_bytes_per_token, else its `src` GGUF header."""
    if is_int(entry.get("kv_bytes_per_token")):
        return entry["kv_bytes_per_token"]
    src = entry.get("src")
    if not (stat_src and isinstance(src, str) and os.path.isfile(src)):
        return None
    stat = os.stat(src)
    try:
        return _gguf_kv_bytes(src, stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class _Model:
    """What the sizing knows of one model entry: its settings and the file's numbers."""

    s: dict[str, Any]
    size: int | None  # bytes of the file
    kv: int | None  # KV cache bytes per token of context

    @property
    def slot_mib(self) -> float:
        """GPU memory of one slot's KV cache (MiB); needs kv."""
        return slot_tokens(self.s) * (self.kv or 0) / MIB

    @property
    def weights_mib(self) -> int:
        """The file's size in MiB (rounded up); needs size."""
        return -(-(self.size or 0) // MIB)

    @property
    def elastic(self) -> bool:
        """Both counts 'auto' and no gpu_memory_gb: sized from the GPUs' memory."""
        return (
            self.s["kind"] == "chat"
            and self.s["parallel"] == AUTO
            and self.s["ctx_size"] == AUTO
            and not is_number(self.s.get("gpu_memory_gb"))
        )


@dataclass(frozen=True)
class Sizing:
    """One model's engine numbers: slots, context, GPU memory of one engine, and how."""

    parallel: int
    ctx_size: int
    need_mib: int | None  # None: not known (no file size), or a CPU host
    how: str  # for the run's output


def _need_mib(model: _Model, ctx_size: int, spans: int = 1) -> tuple[int | None, str]:
    """GPU memory (MiB) of one engine with ctx_size tokens, and what the estimate is."""
    s = model.s
    if is_number(s.get("gpu_memory_gb")):
        return int(s["gpu_memory_gb"] * 1e9 / MIB), "gpu_memory_gb"
    if model.size is None:
        return None, "file size not known"
    reserve = RESERVE_MIB * spans
    if model.kv:
        kv_mib = -(-ctx_size * model.kv // MIB)
        return model.weights_mib + kv_mib + reserve, "weights + KV cache + reserve"
    margin = int(model.size / MIB * (100 + KV_MARGIN_PCT) / 100)
    return margin + reserve, f"file size + {KV_MARGIN_PCT}% + reserve"


def _counts(model: _Model, cap: int) -> tuple[int, int, str]:
    """parallel and ctx_size from the entry when at least one is a number (Sizing rule)."""
    s, slot = model.s, slot_tokens(model.s)
    parallel, ctx_size = s["parallel"], s["ctx_size"]
    if parallel == AUTO:
        parallel = min(cap, ctx_size // slot)
        return parallel, ctx_size, f"parallel auto: ctx_size // {slot} tokens, at most {cap}"
    if ctx_size == AUTO:
        return parallel, parallel * slot, f"ctx_size auto: parallel x {slot} tokens"
    return parallel, ctx_size, "as written in localai_models"


def _cpu_sizing(model: _Model) -> Sizing:
    """A CPU host: CPU_SLOTS slots when both counts are 'auto'."""
    if model.s["kind"] == "chat" and model.s["parallel"] == model.s["ctx_size"] == AUTO:
        slot = slot_tokens(model.s)
        return Sizing(CPU_SLOTS, CPU_SLOTS * slot, None, f"auto on a CPU host: {CPU_SLOTS} slots")
    parallel, ctx_size, how = _counts(model, CPU_SLOTS)
    return Sizing(parallel, ctx_size, None, f"{how}, on a CPU host")


def _fixed_sizing(model: _Model) -> Sizing:
    """A GPU engine whose size does not depend on the GPUs: counts written, or bounded by
    gpu_memory_gb (both counts 'auto': as many slots as that memory holds)."""
    s = model.s
    if s["kind"] == "chat" and s["parallel"] == s["ctx_size"] == AUTO:
        need, _ = _need_mib(model, 0)
        if model.size is None or not model.kv:
            raise AnsibleFilterError(_unknown_for_auto(model))
        room = (need or 0) - model.weights_mib - RESERVE_MIB
        slots = min(MAX_GPU_SLOTS, int(room // model.slot_mib))
        if slots < 1:
            raise AnsibleFilterError(
                f"localai_models entry '{s['name']}': gpu_memory_gb {s['gpu_memory_gb']} holds the "
                f"weights ({model.weights_mib} MiB) and {RESERVE_MIB} MiB of buffers but no slot "
                f"of {slot_tokens(s)} tokens ({model.slot_mib:.0f} MiB); fix: raise "
                "gpu_memory_gb, or set it to 'auto'"
            )
        ctx_size = slots * slot_tokens(s)
        return Sizing(slots, ctx_size, need, f"auto within gpu_memory_gb: {slots} slots")
    parallel, ctx_size, how = _counts(model, MAX_GPU_SLOTS)
    need, what = _need_mib(model, ctx_size)
    return Sizing(parallel, ctx_size, need, f"{how}; GPU memory: {what}")


def _unknown_for_auto(model: _Model) -> str:
    """The message for an 'auto' entry whose file size or KV size per token is not known."""
    missing = (
        "the size of its file is not known yet (add size_gb: the file's size in GB)"
        if model.size is None
        else "its KV cache size per token is not known (add kv_bytes_per_token: layers x KV "
        "heads x head dim x 2 x 2 bytes, or use a `src` GGUF file, whose header tells)"
    )
    return (
        f"localai_models entry '{model.s['name']}' has parallel and ctx_size 'auto' on a GPU "
        "host but "
        f"{missing}; fix: that, or set parallel and ctx_size"
    )


def _usable_mib(gpu: dict[str, Any]) -> int:
    """A GPU's memory less the HEADROOM_PCT kept free."""
    return gpu["memory_mib"] - gpu["memory_mib"] * HEADROOM_PCT // 100


def _layout_need(model: _Model, fixed: Sizing | None) -> int | None:
    """GPU memory (MiB) one engine needs for the layout choice: an elastic engine's weights,
    one slot and the reserve (the least it can run with), else its fixed size."""
    if fixed is not None:
        return fixed.need_mib
    if model.size is None or not model.kv:
        raise AnsibleFilterError(_unknown_for_auto(model))
    return model.weights_mib + int(model.slot_mib + 1) + RESERVE_MIB


def _room(
    group: list[dict[str, Any]],
    layout: str,
    first_gpu: int,
    models: list[_Model],
    fixed: list[Sizing | None],
) -> tuple[int, float, str]:
    """KV cache memory left for the elastic engines on a group of GPUs, and what one slot of
    each of them takes together: (free MiB, MiB per slot, a description of the group)."""
    spans = len(group) if layout == "split" else 1
    usable = sum(_usable_mib(g) for g in group)
    holds_first = any(g["index"] == first_gpu for g in group)
    others = weights = reserves = 0
    per_slot = 0.0
    for model, size in zip(models, fixed, strict=True):
        count = model.s["engines_per_gpu"] if layout != "split" else 1
        if model.s["kind"] == "embedding" and not holds_first:
            continue
        if size is None:
            weights += model.weights_mib * count
            reserves += RESERVE_MIB * spans * count
            per_slot += model.slot_mib * count
        elif size.need_mib is None:
            raise AnsibleFilterError(
                f"localai_models entry '{model.s['name']}': the size of its file is not known, "
                "so the GPU memory left for the 'auto' chat engines is not either; fix: add "
                "size_gb (the file's size in GB) or gpu_memory_gb to that entry"
            )
        else:
            others += size.need_mib * count
    indexes = ", ".join(str(g["index"]) for g in group)
    where = f"GPU {indexes}" if len(group) == 1 else f"GPUs {indexes} together"
    memory = sum(g["memory_mib"] for g in group)
    detail = (
        f"{where}: {memory} MiB, {usable} usable ({HEADROOM_PCT}% kept free), less {others} "
        f"MiB for the other engines, {weights} MiB of weights and {reserves} MiB of reserve"
    )
    return usable - others - weights - reserves, per_slot, detail


def _check_gpu_memory(
    models: list[_Model], fixed: list[Sizing | None], gpus: list[dict[str, Any]]
) -> None:
    """Elastic engines are sized from the GPUs' memory: refuse when it is not known."""
    names = ", ".join(f"'{m.s['name']}'" for m, size in zip(models, fixed, strict=True) if not size)
    if names and (not gpus or any(g["memory_mib"] <= 0 for g in gpus)):
        raise AnsibleFilterError(
            f"localai_models entries {names} have parallel and ctx_size 'auto', but the GPUs "
            "report no memory size (unified-memory parts such as GH200 or GB10 do not); fix: "
            "set parallel, ctx_size and gpu_memory_gb on those entries"
        )


def _elastic_sizing(
    models: list[_Model], fixed: list[Sizing | None], layout: str, gpus: list[dict[str, Any]]
) -> dict[int, Sizing]:
    """Slots and context of the elastic chat engines (both counts 'auto', no gpu_memory_gb).

    Every GPU set an engine runs on (each GPU with replicas, all of them with split, the first
    with single) gives the KV memory left after the other engines, the weights and the
    reserves; the tightest one decides, and all elastic engines get the same number of slots:
    that memory // (one slot of each), at most MAX_GPU_SLOTS. Raises when it holds no slot;
    the GPUs' memory sizes are known (_check_gpu_memory ran before the layout was chosen).
    """
    elastic = [i for i, model in enumerate(models) if fixed[i] is None]
    if not elastic:
        return {}
    names = ", ".join(f"'{models[i].s['name']}'" for i in elastic)
    groups = {"replicas": [[g] for g in gpus], "split": [gpus]}.get(layout, [gpus[:1]])
    first = gpus[0]["index"]
    rooms = [_room(group, layout, first, models, fixed) for group in groups]
    free, per_slot, detail = min(rooms, key=lambda room: room[0] / room[1])
    if len(rooms) > 1:
        detail = f"the tightest GPU set, {detail}"
    fits = int(free // per_slot)
    if fits < 1:
        raise AnsibleFilterError(
            f"localai_models entries {names} have parallel and ctx_size 'auto', but {detail} "
            f"leave {free} MiB, less than one slot ({per_slot:.0f} MiB of KV cache); fix: a "
            "smaller quantisation, fewer engines per GPU, another localai_gpu_layout, or "
            "parallel, ctx_size and gpu_memory_gb set by hand"
        )
    slots = min(MAX_GPU_SLOTS, fits)
    limit = (
        f"the memory holds {fits}, {MAX_GPU_SLOTS} is the most auto gives"
        if fits > slots
        else "what the memory holds"
    )
    spans = len(gpus) if layout == "split" else 1
    sizing = {}
    for i in elastic:
        model = models[i]
        ctx_size = slots * slot_tokens(model.s)
        need, _ = _need_mib(model, ctx_size, spans)
        sizing[i] = Sizing(
            slots,
            ctx_size,
            need,
            f"auto: {slots} slots ({limit}) of {slot_tokens(model.s)} tokens, KV cache "
            f"{(model.kv or 0) / 1024:g} KiB per token; {detail}",
        )
    return sizing


def _gpu_list(gpus: Any) -> list[dict[str, Any]]:
    """The nvidia_toolkit_gpus fact, reduced to index and memory_mib, in index order."""
    out = []
    for position, gpu in enumerate(gpus or []):
        if not isinstance(gpu, dict):
            raise AnsibleFilterError(f"engine_plan: gpus[{position}] is not a mapping")
        index = int(gpu.get("index", position))
        memory = gpu.get("memory_mib")
        out.append({"index": index, "memory_mib": int(memory) if memory else 0})
    return sorted(out, key=lambda g: g["index"])


def _fit_errors(
    layout: str, gpus: list[dict[str, Any]], chat_need: list[int], embed_need: int
) -> list[str]:
    """Why a layout does not fit the GPUs (empty: it fits).

    replicas: every GPU holds one engine of each chat model, GPU 0 also the embedding
    engines. single: GPU 0 holds everything. split: the GPUs' memory together holds it. Needs
    are MiB; each GPU keeps HEADROOM_PCT of its memory free.
    """
    chat = sum(chat_need)
    if layout == "replicas":
        wanted = [chat + (embed_need if i == 0 else 0) for i in range(len(gpus))]
        return [
            f"GPU {g['index']} has {g['memory_mib']} MiB but needs {need} ({_usable_mib(g)} usable)"
            for g, need in zip(gpus, wanted, strict=True)
            if _usable_mib(g) < need
        ]
    if layout == "single":
        need = chat + embed_need
        first = gpus[0]
        if _usable_mib(first) < need:
            return [
                f"GPU {first['index']} has {first['memory_mib']} MiB but needs {need} "
                f"({_usable_mib(first)} usable)"
            ]
        return []
    total = sum(g["memory_mib"] for g in gpus)
    usable = sum(_usable_mib(g) for g in gpus)
    need = chat + embed_need + RESERVE_MIB * (len(gpus) - 1)
    return (
        [f"the {len(gpus)} GPUs have {total} MiB together but need {need} ({usable} usable)"]
        if usable < need
        else []
    )


def _choose_layout(
    layout: str,
    gpus: list[dict[str, Any]],
    needs: dict[str, list[int | None]],
    var_name: str,
) -> str:
    """Resolve `auto` and check that the layout fits; raise naming the variable otherwise."""
    if not gpus:
        return "single"
    tried = ""
    known = None not in needs["chat"] and None not in needs["embedding"]
    chat = [n for n in needs["chat"] if n is not None]
    embed = sum(n for n in needs["embedding"] if n is not None)
    if layout == "auto":
        if len(gpus) == 1:
            layout = "single"
        elif not known:
            raise AnsibleFilterError(
                f"{var_name} is 'auto' but the size of a model file is not known yet, so the "
                "layout cannot be chosen; fix: add size_gb (the file size in GB) to each chat "
                f"model in localai_models, or set {var_name} to replicas (one engine per GPU) "
                "or split (one engine across the GPUs)"
            )
        else:
            # Nothing fits: judge split, the layout with the most memory, for the message.
            layout = next(
                (c for c in ("replicas", "split") if not _fit_errors(c, gpus, chat, embed)),
                "split",
            )
            tried = "'auto' (replicas and split tried)"
    if not known:
        return layout
    errors = _fit_errors(layout, gpus, chat, embed)
    if errors:
        raise AnsibleFilterError(
            f"{var_name} is {tried or repr(layout)} but the models do not fit: "
            f"{'; '.join(errors)} MiB "
            f"(estimate: file size + KV cache (ctx_size x kv_bytes_per_token, else "
            f"{KV_MARGIN_PCT}% of the file) + {RESERVE_MIB} MiB per GPU, or the model's "
            f"gpu_memory_gb; {HEADROOM_PCT}% of each GPU kept free); fix: choose another layout "
            "(split spreads one engine over all GPUs), a smaller quantisation or ctx_size, or "
            "set gpu_memory_gb on the model if you measured it"
        )
    return layout


def _replicas(
    layout: str, gpu_mode: str, gpus: list[dict[str, Any]], cpu_replicas: int
) -> list[int | None]:
    """GPU index of each chat engine of one model (None: no pinning)."""
    if gpu_mode == "cpu":
        return [None] * (cpu_replicas if layout in ("auto", "replicas") else 1)
    if not gpus or layout == "split":
        return [None]
    if layout == "single":
        return [gpus[0]["index"]]
    return [g["index"] for g in gpus]


def _check_split_engines(layout: str, settings: list[dict[str, Any]], var_name: str) -> None:
    """One split engine already spans every GPU: more than one per GPU cannot be placed."""
    if layout != "split":
        return
    for s in settings:
        if s["kind"] == "chat" and s["engines_per_gpu"] > 1:
            raise AnsibleFilterError(
                f"localai_models entry '{s['name']}' has engines_per_gpu: {s['engines_per_gpu']} "
                f"but {var_name} resolved to split (one engine across all GPUs); fix: remove "
                f"engines_per_gpu from the chat model, or set {var_name} to replicas"
            )


def _split_args(layout: str, gpu_mode: str, gpus: list[dict[str, Any]]) -> list[str]:
    """--split-mode layer --tensor-split in proportion to each GPU's memory."""
    if gpu_mode == "cpu" or layout != "split" or len(gpus) < 2:
        return []
    weights = ",".join(str(max(g["memory_mib"], 1)) for g in gpus)
    return ["--split-mode", "layer", "--tensor-split", weights]


def engine_plan(  # noqa: PLR0915 - one pass over the models, in the order documented
    models: Any,
    gpu_mode: str = "gpu",
    *,
    layout: str = "auto",
    gpus: Any = None,
    sizes: dict[str, Any] | None = None,
    cpu_replicas: int = 1,
    chat_port_base: int = 8090,
    embedding_port_base: int = 8080,
    host: str = "127.0.0.1",
    listen_host: str | None = None,
    models_mount: str = "/models",
    allow_unverified: bool = True,
    allow_http: bool = True,
    stat_src: bool = True,
    var_name: str = "localai_gpu_layout",
) -> list[dict[str, Any]]:
    """Return the engines to run: one llama-server per model, or per model and GPU.

    gpu_mode: 'cpu' (no offload: --n-gpu-layers 0) or 'gpu'. The older values 'single',
    'split' and 'replicas' still work as gpu_mode='gpu' with that layout.
    layout (localai_gpu_layout): 'replicas' runs one chat engine per GPU, pinned with
    `gpu: <index>` (programs.conf sets CUDA_VISIBLE_DEVICES), each a server of the alias's
    balancer (plugins/filter/balancer.py); 'split' runs one engine across all GPUs
    (--split-mode layer, --tensor-split by memory); 'single' runs one engine on the first GPU;
    'auto' takes single on one GPU, else replicas when one engine of every chat model fits
    each GPU, else split.
    Fit = file size + KV cache + RESERVE_MIB per GPU (or gpu_memory_gb) within each GPU's
    memory less HEADROOM_PCT; a layout that does not fit raises, naming var_name. Embedding
    engines stay on the first GPU. Chat counts left 'auto' are sized as the module docstring's
    "Sizing" says; every engine reports its numbers (parallel, ctx_size, gpu_memory_gb: the
    estimate of one engine, None on a CPU host or when not known) and `sizing`, how they were
    found.
    An entry's engines_per_gpu (GPU modes only) repeats each of its engines on the same GPU:
    more servers of the alias's balancer, each with its own port and host thread.
    gpus: nvidia_toolkit_gpus ([{index, memory_mib, ...}]); empty: no pinning (as before).
    sizes: {file: bytes} from the models role (or the lock file's {file: {size}}); else
    size_gb, else os.stat of `src`. KV cache per token: kv_bytes_per_token, else the header of
    a `src` GGUF file (stat_src: False reads no controller file).
    cpu_replicas: chat engines per chat model in cpu mode (layout auto or replicas).
    Ports: chat engines from chat_port_base up, embedding engines from embedding_port_base up,
    in list order. host is the address clients (LiteLLM) use; listen_host (default: host) is
    what llama-server binds, e.g. 0.0.0.0 inside a container whose ports a fleet node publishes.
    Source/sha rules are the models role's business, hence the permissive defaults here.
    """
    if gpu_mode not in GPU_MODES:
        raise AnsibleFilterError(
            f"engine_plan: gpu_mode is {gpu_mode!r}; fix: one of {', '.join(GPU_MODES)}"
        )
    if gpu_mode in GPU_LAYOUTS:
        gpu_mode, layout = "gpu", gpu_mode
    if layout not in GPU_LAYOUTS:
        raise AnsibleFilterError(f"{var_name} is {layout!r}; fix: one of {', '.join(GPU_LAYOUTS)}")
    if not is_int(cpu_replicas) or cpu_replicas < 1:
        raise AnsibleFilterError(f"localai_cpu_replicas is {cpu_replicas!r}; fix: an integer >= 1")
    errors = models_validate(models, allow_unverified=allow_unverified, allow_http=allow_http)
    if errors:
        raise AnsibleFilterError("engine_plan: invalid model list:\n" + "\n".join(errors))
    gpu_list = _gpu_list(gpus) if gpu_mode != "cpu" else []
    settings = [entry_settings(entry) for entry in models]
    known = [
        _Model(
            s,
            _model_size(s, sizes, stat_src),
            _kv_bytes_per_token(s, stat_src) if s["kind"] == "chat" else None,
        )
        for s in settings
    ]
    if gpu_mode == "cpu":
        sizing = [_cpu_sizing(model) for model in known]
    else:
        fixed = [None if m.elastic else _fixed_sizing(m) for m in known]
        needs: dict[str, list[int | None]] = {"chat": [], "embedding": []}
        for model, size in zip(known, fixed, strict=True):
            need = _layout_need(model, size)
            count = model.s["engines_per_gpu"]
            needs[model.s["kind"]].append(None if need is None else need * count)
        _check_gpu_memory(known, fixed, gpu_list)
        _check_split_engines(layout, settings, var_name)  # before the fit: it counts them
        layout = _choose_layout(layout, gpu_list, needs, var_name)
        _check_split_engines(layout, settings, var_name)  # auto may have resolved to split
        elastic = _elastic_sizing(known, fixed, layout, gpu_list)
        sizing = [elastic.get(i) or size for i, size in enumerate(fixed)]
    first_gpu = gpu_list[0]["index"] if gpu_list else None
    engines: list[dict[str, Any]] = []
    # Program names count llama-server's chat and embedding engines and Infinity's apart.
    counters = {"chat": 0, "embedding": 0, "infinity": 0}
    ports = {"chat": chat_port_base, "embedding": embedding_port_base}
    bind = listen_host or host
    for s, size in zip(settings, sizing, strict=True):
        kind = s["kind"]
        counter = "infinity" if is_infinity(s) else kind
        index = counters[counter]
        counters[counter] += 1
        pins = (
            _replicas(layout, gpu_mode, gpu_list, cpu_replicas) if kind == "chat" else [first_gpu]
        )
        if gpu_mode != "cpu":
            pins = [gpu for gpu in pins for _ in range(s["engines_per_gpu"])]
        model_path = f"{models_mount.rstrip('/')}/{s['file']}"
        for replica, gpu in enumerate(pins):
            port = ports[kind]
            ports[kind] += 1
            counts = {"parallel": size.parallel, "ctx_size": size.ctx_size}
            infinity = is_infinity(s)
            build = _infinity_args if infinity else _engine_args
            args = build(s | counts, bind, port, model_path, gpu_mode == "cpu")
            if kind == "chat":
                args += _split_args(layout, gpu_mode, gpu_list)
            engines.append(
                {
                    "program": _program(
                        kind, index, s["name"], replica if len(pins) > 1 else None, infinity
                    ),
                    "kind": kind,
                    "engine": "infinity" if infinity else "llama-server",
                    "command": INFINITY_COMMAND if infinity else LLAMA_SERVER_COMMAND,
                    # Where the proxy counts an Infinity model's input tokens (Infinity has
                    # no /tokenize and cuts over-long inputs silently); None for llama-server.
                    "tokenizer_file": (
                        f"{model_path}/tokenizer.json"
                        if infinity and "tokenizer.json" in s["files"]
                        else None
                    ),
                    "model": s["name"],
                    "alias": s["alias"],
                    "host": host,
                    "port": port,
                    "model_path": model_path,
                    "args": args,
                    "gpu": gpu,
                    # The promise clients are told (LiteLLM model_info, /v1/models) and the
                    # proxy enforces: longest input, longest reply (chat; None for embeddings).
                    "prompt_tokens": s["prompt_tokens"],
                    "max_tokens": s.get("max_tokens"),
                    # The sizes chosen (printed by the run) and how they were found.
                    **counts,
                    "gpu_memory_gb": (
                        None if size.need_mib is None else round(size.need_mib * MIB / 1e9, 1)
                    ),
                    "sizing": size.how,
                }
            )
    _check_plan(engines)
    return engines


def _check_plan(engines: list[dict[str, Any]]) -> None:
    """Ports and program names must not collide (e.g. 11 embedding engines reach 8090)."""
    for key in ("port", "program"):
        values = [e[key] for e in engines]
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        if dupes:
            raise AnsibleFilterError(
                f"engine_plan: engines share {key} {', '.join(dupes)}; fix: move "
                "chat_port_base/embedding_port_base apart or give models distinct names"
            )


def select_gpus(
    gpus: Any, indexes: Any, var_name: str = "localai_gpu_indexes"
) -> list[dict[str, Any]]:
    """The GPUs the stack may use, numbered as the container sees them.

    gpus: the nvidia_toolkit_gpus fact (nvidia-smi order). indexes: nvidia-smi indexes to use
    (var_name); empty or None: every GPU, unchanged. Otherwise the container is given only
    those devices (docker --gpus device=...), where CUDA numbers them 0, 1, ... in nvidia-smi
    order: each selected GPU comes back with that `index` and its `host_index`. Raises, naming
    var_name and the GPUs there are, for an index that is not an int or not on this host.
    """
    gpu_list = [g for g in (gpus or []) if isinstance(g, dict)]
    if indexes in (None, "", []):
        return gpu_list
    present = sorted(int(g.get("index", i)) for i, g in enumerate(gpu_list))
    there = ", ".join(str(i) for i in present) or "none (nvidia_toolkit found no NVIDIA GPU)"
    fix = f"fix: list indexes from `nvidia-smi -L` ({there}), or [] for all GPUs"
    if not isinstance(indexes, list) or not all(is_int(i) and i >= 0 for i in indexes):
        raise AnsibleFilterError(f"{var_name} is {indexes!r}, not a list of GPU indexes; {fix}")
    if len(set(indexes)) != len(indexes):
        raise AnsibleFilterError(f"{var_name} lists a GPU twice ({indexes!r}); {fix}")
    missing = sorted(set(indexes) - set(present))
    if missing:
        raise AnsibleFilterError(
            f"{var_name} lists GPU {', '.join(str(i) for i in missing)}, which this host does "
            f"not have (GPUs here: {there}); {fix}"
        )
    chosen = sorted(
        (g for i, g in enumerate(gpu_list) if int(g.get("index", i)) in indexes),
        key=lambda g: int(g["index"]),
    )
    return [g | {"index": n, "host_index": int(g["index"])} for n, g in enumerate(chosen)]
