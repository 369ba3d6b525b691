"""The model list (`localai_models`): its fields, their rules, and its files.

Why a filter and not Jinja: the rules span several fields and several entries (duplicates,
context per slot against the promised max tokens), and the same rules must hold in the
`models` role, the `litellm_config` role, the image's supervisor config and the unit tests.
One pure-Python implementation keeps them identical everywhere.

Model entry (one dict per model)::

    name          engine-side model name: llama-server --alias, LiteLLM openai/<name>
    alias         client-facing name (gpt-3.5-turbo, text-embedding-ada-002)
    kind          chat | embedding
    file          file name under the models dir (one name, used everywhere), *.gguf
    url | src     https download URL, or a path on the controller (exactly one)
    sha256        64 hex digits (pinned), 'huggingface' (learn it from the source's published
                  metadata and record it in the lock file), or empty (like 'huggingface' for a
                  url; a src without sha256 is refused unless unverified models are allowed)
    ctx_size      total context of the engine (tokens), split evenly over `parallel` slots;
                  chat: 'auto' (see "Sizing" below)
    parallel      slots (concurrent requests) of the engine; chat: 'auto'
    max_tokens    chat: most tokens one reply may generate (passed as --n-predict, so the
                  promise is enforced by the engine)
    prompt_tokens prompt budget per request (chat: prompt; embedding: longest input)
    chat_template chat only: llama-server --chat-template NAME (optional), a built-in template
                  for a file that carries none; without it the file's own template runs
    jinja         chat only: true -> --jinja, false -> --no-jinja (optional; default --jinja,
                  or --no-jinja when chat_template names a built-in template)
    chat_template_file  chat only: a Jinja chat template file on the controller (relative paths
                  start at the playbook dir), placed beside the model as <file stem>.jinja and
                  passed as --chat-template-file, in place of the file's own template: for GGUF
                  files whose template describes no tools (tool calls need one that does, e.g.
                  a fixed template from llama.cpp's models/templates). Not with chat_template
                  or jinja: false
    flash_attn    on | off | auto
    n_gpu_layers  layers offloaded to the GPU (int >= 0, or 'all' / 'auto'); 0 in cpu mode
    batch_size, ubatch_size   optional llama-server batch sizes
    pooling       embedding only: none | mean | cls | last | rank (default mean)
    extra_args    list of extra llama-server arguments (strings), never the managed ones
    size_gb       optional hint: the file's size in GB, for the `auto` GPU layout when the size
                  is not known otherwise (a controller `src` file is measured, a download is not)
    gpu_memory_gb optional: GPU memory one engine of this model needs (weights + KV cache +
                  buffers), overriding the estimate of the GPU layout (see engine_plan);
                  chat: 'auto' (the same as leaving it out)
    kv_bytes_per_token  chat only, optional: bytes of KV cache one token of context takes (f16
                  cache: layers x KV heads x head dim x 2 (K and V) x 2 bytes; Llama-3-8B:
                  32 x 8 x 128 x 2 x 2 = 131072). Without it, read from the GGUF header of a
                  `src` file (the `auto` sizes need it)
    engine        embedding only: llama-server (default; a GGUF file) or infinity (Infinity,
                  infinity-emb, on the official Hugging Face model files: a directory, see
                  "Infinity models" below)
    files         infinity only: {path in the model directory: sha256} (64 hex digits,
                  'huggingface' or empty, as `sha256` for one file), every file the engine
                  reads (config.json, weights, tokenizer, sentence-transformers modules)
    engines_per_gpu   engines of this model on each GPU it runs on (default 1, at most
                  MAX_ENGINES_PER_GPU), each a server of the alias's balancer. For a small
                  model whose engine is busy on the CPU side (an embedding engine's per-request
                  work runs on one host thread while the GPU idles). GPU hosts only; not with
                  the split layout

The context rule: llama-server splits --ctx-size evenly over --parallel slots, so one request
gets ctx_size // parallel tokens. That must hold the prompt budget plus the reply:
chat: ctx_size // parallel >= prompt_tokens + max_tokens; embedding: ctx_size // parallel >=
prompt_tokens and ubatch_size (default 512) >= prompt_tokens (an embedding input is processed
in one physical batch).

Infinity models (engine: infinity): `file` names a directory under the models dir, `files` the
files in it, each verified by its own sha256 like a GGUF file; `url` is the base the paths are
appended to (https://huggingface.co/OWNER/REPO/resolve/REVISION: a pinned revision), `src` a
directory on the controller. model_files turns such an entry into one download per file
for the models role. The engine batches the inputs of concurrent requests, sorted by length, in
batches of at most batch_size (Infinity's --batch-size); its GPU memory is gpu_memory_gb
(INFINITY_GPU_MEMORY_GB unless written). Not for it: ctx_size, parallel, ubatch_size, pooling,
flash_attn, n_gpu_layers (the model directory's sentence-transformers modules give the pooling).
"""

from __future__ import annotations

import re
from typing import Any

KINDS = ("chat", "embedding")
FLASH_ATTN = ("on", "off", "auto")
POOLING = ("none", "mean", "cls", "last", "rank")
GPU_MODES = ("cpu", "gpu", "single", "split", "replicas")
GPU_LAYOUTS = ("auto", "replicas", "split", "single")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.gguf$")
HF_RESOLVE_RE = re.compile(r"^https?://[^/]+/[^/]+/[^/]+/resolve/[^/]+/.+$")
SHA_LEARN = "huggingface"
UBATCH_DEFAULT = 512
# Engines of one model per GPU: each holds its own copy of the weights and one host thread.
MAX_ENGINES_PER_GPU = 8
AUTO = "auto"
# Fields a chat model may leave to the plan (Sizing, above).
AUTO_FIELDS = ("ctx_size", "parallel", "gpu_memory_gb")

ENGINES = ("llama-server", "infinity")
# Infinity (infinity-emb): its GPU memory when the entry gives none, the model's weights in float16
# plus PyTorch's CUDA context and the activations of one batch (1.8 GiB measured for e5-small at
# --batch-size 128 under 4 clients x 128 documents on an H200). The batch size: on that H200, 128
# gave 1.73x the docs/s of 32 for 4 clients x 128 documents and 1.2x for 16 single-document clients;
# 512 gave less than 128. Both: bench/results/2026-12-04-h200-infinity/NOTES.md, "Infinity on an
# H200".
INFINITY_GPU_MEMORY_GB = 3
INFINITY_BATCH_SIZE = 128
DIR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
PIECE_RE = re.compile(
    r"^(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}/){0,4}[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
)
# Flags of the Infinity command the plan writes itself.
INFINITY_MANAGED_FLAGS = frozenset(
    {
        "--model-id",
        "--served-model-name",
        "--host",
        "--port",
        "--device",
        "--dtype",
        "--engine",
        "--batch-size",
        "--url-prefix",
        "--api-key",
        "--model-warmup",
        "--no-model-warmup",
    }
)
# Fields only llama-server takes.
LLAMA_SERVER_ONLY = ("ctx_size", "parallel", "ubatch_size", "pooling", "flash_attn", "n_gpu_layers")

REQUIRED = ("name", "alias", "kind", "file")
COMMON_FIELDS = (
    "name",
    "alias",
    "kind",
    "file",
    "url",
    "src",
    "sha256",
    "ctx_size",
    "parallel",
    "prompt_tokens",
    "flash_attn",
    "n_gpu_layers",
    "batch_size",
    "ubatch_size",
    "extra_args",
    "description",
    "size_gb",
    "gpu_memory_gb",
    "engines_per_gpu",
    "engine",
    "files",
)
CHAT_ONLY = ("max_tokens", "chat_template", "chat_template_file", "jinja", "kv_bytes_per_token")
EMBEDDING_ONLY = ("pooling", "engine", "files")
ALL_FIELDS = COMMON_FIELDS + CHAT_ONLY + EMBEDDING_ONLY

DEFAULTS: dict[str, dict[str, Any]] = {
    "chat": {
        "ctx_size": 4096,
        "parallel": 4,
        "max_tokens": 512,
        "prompt_tokens": 512,
        "flash_attn": "auto",
        "n_gpu_layers": 999,
        "extra_args": [],
        "engines_per_gpu": 1,
    },
    "infinity": {
        "prompt_tokens": 512,
        "batch_size": INFINITY_BATCH_SIZE,
        "gpu_memory_gb": INFINITY_GPU_MEMORY_GB,
        "extra_args": [],
        "engines_per_gpu": 1,
        "n_gpu_layers": 999,
    },
    "embedding": {
        "ctx_size": 2048,
        "parallel": 4,
        "prompt_tokens": 512,
        "flash_attn": "auto",
        "n_gpu_layers": 999,
        "pooling": "mean",
        "extra_args": [],
        "engines_per_gpu": 1,
        "engine": "llama-server",
    },
}

# Flags the plan writes itself; a copy in extra_args would silently win or clash.
MANAGED_FLAGS = frozenset(
    {
        "-m",
        "--model",
        "-a",
        "--alias",
        "--host",
        "--port",
        "-c",
        "--ctx-size",
        "-np",
        "--parallel",
        "-ngl",
        "--gpu-layers",
        "--n-gpu-layers",
        "-fa",
        "--flash-attn",
        "--embedding",
        "--embeddings",
        "--pooling",
        "-n",
        "--predict",
        "--n-predict",
        "--chat-template",
        "--chat-template-file",
        "--jinja",
        "--no-jinja",
        "-b",
        "--batch-size",
        "-ub",
        "--ubatch-size",
        "--metrics",
        "--api-key",
        "--api-key-file",
    }
)


def _label(var_name: str, index: int, entry: Any) -> str:
    """Name an entry the way a user finds it in group_vars: list index plus its name."""
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{var_name}[{index}]" + (f" (name '{name}')" if isinstance(name, str) else "")


def is_int(value: Any) -> bool:
    """True for real integers; YAML booleans are ints in Python and must not pass."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for ints and floats, never booleans."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_infinity(entry: Any) -> bool:
    """True for a model entry served by Infinity (engine: infinity)."""
    return isinstance(entry, dict) and entry.get("engine") == "infinity"


def entry_settings(entry: dict[str, Any]) -> dict[str, Any]:
    """Return the entry with the kind's (or Infinity's) defaults filled in (kind assumed valid).

    An Infinity entry reports its batch as `parallel` and its longest input as `ctx_size`, the
    numbers the plan prints for every engine.
    """
    merged = dict(DEFAULTS["infinity" if is_infinity(entry) else entry["kind"]])
    merged.update({k: v for k, v in entry.items() if v is not None})
    if is_infinity(entry):
        merged.setdefault("parallel", merged.get("batch_size"))
        merged.setdefault("ctx_size", merged.get("prompt_tokens"))
    return merged


def _check_fields(label: str, entry: dict[str, Any]) -> list[str]:
    """Missing, unknown and kind-specific fields."""
    errors = [
        f"{label}: field '{field}' is missing; fix: add it (see localai_models in "
        "group_vars/all/models.yml)"
        for field in REQUIRED
        if entry.get(field) in (None, "")
    ]
    for field in sorted(set(entry) - set(ALL_FIELDS)):
        errors.append(
            f"{label}: field '{field}' is unknown; fix: remove it or use one of "
            f"{', '.join(ALL_FIELDS)}"
        )
    kind = entry.get("kind")
    if kind is not None and kind not in KINDS:
        errors.append(f"{label}: field 'kind' is '{kind}'; fix: use one of {', '.join(KINDS)}")
    wrong_kind = {"embedding": CHAT_ONLY, "chat": EMBEDDING_ONLY}.get(kind, ())
    errors.extend(
        f"{label}: field '{field}' does not apply to a {kind} model; fix: remove it"
        for field in wrong_kind
        if entry.get(field) is not None
    )
    engine = entry.get("engine")
    if engine is not None and engine not in ENGINES:
        errors.append(f"{label}: field 'engine' is {engine!r}; fix: one of {', '.join(ENGINES)}")
    if engine == "infinity":
        errors += [
            f"{label}: field '{field}' is llama-server's, not Infinity's; fix: remove it"
            for field in LLAMA_SERVER_ONLY
            if entry.get(field) is not None
        ]
        if entry.get("sha256") not in (None, ""):
            errors.append(
                f"{label}: field 'sha256' is for one file; an Infinity model gives one per "
                "file; fix: move it into 'files' ({path: sha256})"
            )
    elif entry.get("files") is not None:
        errors.append(
            f"{label}: field 'files' is for Infinity models only; fix: remove it, or set "
            "engine: infinity (a Hugging Face model directory)"
        )
    return errors


def _check_names(label: str, entry: dict[str, Any]) -> list[str]:
    """Shapes of name, alias and file: they end up on command lines and in paths."""
    errors = []
    for field in ("name", "alias"):
        value = entry.get(field)
        if value not in (None, "") and not (isinstance(value, str) and NAME_RE.match(value)):
            errors.append(
                f"{label}: field '{field}' is {value!r}; fix: use letters, digits, '.', '_' "
                "or '-' (no spaces or slashes, at most 128 characters)"
            )
    file = entry.get("file")
    if is_infinity(entry):
        if file not in (None, "") and not (
            isinstance(file, str) and DIR_RE.match(file) and not file.endswith(".gguf")
        ):
            errors.append(
                f"{label}: field 'file' is {file!r}; fix: for an Infinity model, the name of "
                "its directory under the models dir (letters, digits, '.', '_', '-'; not *.gguf)"
            )
        return errors
    if file not in (None, "") and not (isinstance(file, str) and FILE_RE.match(file)):
        errors.append(
            f"{label}: field 'file' is {file!r}; fix: a bare file name ending in .gguf "
            "(letters, digits, '.', '_', '-'; no directories)"
        )
    return errors


def _check_source(
    label: str, entry: dict[str, Any], allow_unverified: bool, allow_http: bool
) -> list[str]:
    """Exactly one of url/src, URL scheme, and the sha256 rules."""
    url, src, sha = entry.get("url"), entry.get("src"), entry.get("sha256")
    has_url, has_src = url not in (None, ""), src not in (None, "")
    errors = []
    if has_url == has_src:
        errors.append(
            f"{label}: fields 'url' and 'src' are "
            + ("both set" if has_url else "both missing")
            + "; fix: give exactly one (url: an https download, src: a file on the controller)"
        )
    if has_url:
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            errors.append(f"{label}: field 'url' is {url!r}; fix: an https:// URL")
        elif url.startswith("http://") and not allow_http:
            errors.append(
                f"{label}: field 'url' is plain http; fix: use https, or set "
                "models_allow_insecure_http: true (the sha256 still has to match)"
            )
    if has_src and not isinstance(src, str):
        errors.append(f"{label}: field 'src' is {src!r}; fix: a path on the controller")
    if sha in (None, ""):
        if has_src and not allow_unverified:
            errors.append(
                f"{label}: field 'sha256' is missing for a controller file; fix: add "
                "sha256: <output of `sha256sum FILE`> (or, insecure, models_allow_unverified: true)"
            )
    elif not isinstance(sha, str):
        errors.append(f"{label}: field 'sha256' is {sha!r}; fix: a quoted string of 64 hex digits")
    elif sha == SHA_LEARN:
        if has_src or not (isinstance(url, str) and HF_RESOLVE_RE.match(url)):
            errors.append(
                f"{label}: field 'sha256' is 'huggingface' but the source is not a Hugging Face "
                "URL; fix: use a https://HOST/OWNER/REPO/resolve/REVISION/FILE url, or pin the "
                "sha256 (64 hex digits)"
            )
    elif not SHA256_RE.match(sha):
        errors.append(
            f"{label}: field 'sha256' is {sha!r}; fix: 64 lowercase hex digits "
            "(`sha256sum FILE`), 'huggingface', or empty"
        )
    return errors


def model_pieces(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The files of an Infinity model entry, each as a one-file entry for the models role.

    Returns [{name, file: <dir>/<path>, url: <url>/<path> | src: <src>/<path>, sha256,
    piece_of}] in the order of `files` (entry assumed valid).
    """
    pieces = []
    for path, sha in entry["files"].items():
        piece = {
            "name": entry["name"],
            "file": f"{entry['file']}/{path}",
            "sha256": sha or "",
            "piece_of": entry["name"],
        }
        for field in ("url", "src"):
            if entry.get(field) not in (None, ""):
                piece[field] = f"{str(entry[field]).rstrip('/')}/{path}"
        pieces.append(piece)
    return pieces


def model_files(models: Any) -> list[Any]:
    """The model list as the models role places it: one entry per file.

    A GGUF entry stays as it is; an Infinity entry becomes one entry per file of its
    directory (model_pieces), each downloaded, verified and locked on its own. Invalid input is
    passed through unchanged for models_validate to report.
    """
    if not isinstance(models, list):
        return models
    result: list[Any] = []
    for entry in models:
        if is_infinity(entry) and isinstance(entry.get("files"), dict) and _piece_paths_ok(entry):
            result += model_pieces(entry)
        else:
            result.append(entry)
    return result


def _piece_paths_ok(entry: dict[str, Any]) -> bool:
    """Every key of `files` is a relative path the pieces may be named after."""
    return all(isinstance(p, str) and PIECE_RE.match(p) and ".." not in p for p in entry["files"])


def _check_files(
    label: str, entry: dict[str, Any], allow_unverified: bool, allow_http: bool
) -> list[str]:
    """An Infinity entry's directory source (url or src) and its files' sha256."""
    files = entry.get("files")
    if not isinstance(files, dict) or not files:
        return [
            f"{label}: field 'files' is {files!r}; fix: a mapping of every file the engine "
            "reads, {path in the model directory: sha256} (config.json, model.safetensors, "
            "tokenizer.json, modules.json, 1_Pooling/config.json, ...)"
        ]
    errors = [
        f"{label}: field 'files' has the path {path!r}; fix: a relative path inside the model "
        "directory (letters, digits, '.', '_', '-', at most 5 levels, no '..')"
        for path in files
        if not (isinstance(path, str) and PIECE_RE.match(path) and ".." not in path)
    ]
    if "config.json" not in files:
        errors.append(
            f"{label}: field 'files' lists no config.json; fix: add it (Infinity reads the "
            "model's shape from it)"
        )
    base = {k: entry.get(k) for k in ("url", "src")} | {"sha256": "0" * 64}
    errors += _check_source(label, base, allow_unverified, allow_http)
    if errors:
        return errors
    for piece in model_pieces(entry):
        errors += _check_source(
            f"{label} file '{piece['file']}'", piece, allow_unverified, allow_http
        )
    return errors


def _check_piece(
    label: str, entry: dict[str, Any], allow_unverified: bool, allow_http: bool
) -> list[str]:
    """One file of an Infinity model (model_files): its path and source."""
    errors = [
        f"{label}: field '{field}' is unknown for one file of a model directory; fix: remove it"
        for field in sorted(set(entry) - {"name", "file", "url", "src", "sha256", "piece_of"})
    ]
    file = entry.get("file")
    if not (isinstance(file, str) and PIECE_RE.match(file) and ".." not in file):
        errors.append(f"{label}: field 'file' is {file!r}; fix: <directory>/<path>")
    return errors + _check_source(label, entry, allow_unverified, allow_http)


def _check_int(label: str, settings: dict[str, Any], field: str, minimum: int) -> list[str]:
    """One integer field with a lower bound."""
    value = settings.get(field)
    if value is None or (is_int(value) and value >= minimum):
        return []
    return [f"{label}: field '{field}' is {value!r}; fix: an integer >= {minimum}"]


def _check_counts(label: str, settings: dict[str, Any]) -> list[str]:
    """The integer fields, and 'auto' where a chat model may leave a size to the plan."""
    auto = {field for field in AUTO_FIELDS if settings.get(field) == AUTO}
    errors = []
    if settings["kind"] != "chat":
        errors += [
            f"{label}: field '{field}' is 'auto', which only chat models take; fix: a number"
            for field in sorted(auto)
        ]
    for field in (
        "ctx_size",
        "parallel",
        "max_tokens",
        "prompt_tokens",
        "batch_size",
        "ubatch_size",
        "engines_per_gpu",
        "kv_bytes_per_token",
    ):
        if field not in auto:
            errors += _check_int(label, settings, field, 1)
    for field in ("size_gb", "gpu_memory_gb"):
        value = settings.get(field)
        if value is not None and field not in auto and not (is_number(value) and value > 0):
            errors.append(f"{label}: field '{field}' is {value!r}; fix: a number > 0 (GB)")
    return errors


def _check_engine(label: str, settings: dict[str, Any]) -> list[str]:
    """Engine settings: types, enums, and the context-per-slot rule."""
    errors = _check_counts(label, settings)
    per_gpu = settings.get("engines_per_gpu")
    if is_int(per_gpu) and per_gpu > MAX_ENGINES_PER_GPU:
        errors.append(
            f"{label}: field 'engines_per_gpu' is {per_gpu}; fix: at most {MAX_ENGINES_PER_GPU} "
            "(each engine holds its own copy of the model and one host thread)"
        )
    if is_infinity(settings):
        errors += _check_extra_args(label, settings.get("extra_args"), INFINITY_MANAGED_FLAGS)
        return errors
    if settings.get("flash_attn") not in FLASH_ATTN:
        errors.append(
            f"{label}: field 'flash_attn' is {settings.get('flash_attn')!r}; fix: one of "
            "on, off, auto (quote them: YAML reads a bare on/off as a boolean)"
        )
    ngl = settings.get("n_gpu_layers")
    if not ((is_int(ngl) and ngl >= 0) or ngl in ("all", "auto")):
        errors.append(
            f"{label}: field 'n_gpu_layers' is {ngl!r}; fix: an integer >= 0, 'all' or 'auto'"
        )
    if settings["kind"] == "embedding" and settings.get("pooling") not in POOLING:
        errors.append(
            f"{label}: field 'pooling' is {settings.get('pooling')!r}; fix: one of "
            + ", ".join(POOLING)
        )
    for field in ("chat_template", "chat_template_file", "description"):
        if settings.get(field) is not None and not isinstance(settings[field], str):
            errors.append(f"{label}: field '{field}' is {settings[field]!r}; fix: a string")
    if settings.get("chat_template_file") is not None:
        if settings.get("chat_template") is not None:
            errors.append(
                f"{label}: fields 'chat_template' and 'chat_template_file' both set; fix: keep "
                "one (a built-in template name, or a Jinja template file)"
            )
        if settings.get("jinja") is False:
            errors.append(
                f"{label}: field 'chat_template_file' needs llama-server's Jinja path, but "
                "'jinja' is false; fix: drop 'jinja' or set it to true"
            )
    if settings.get("jinja") is not None and not isinstance(settings["jinja"], bool):
        errors.append(f"{label}: field 'jinja' is {settings['jinja']!r}; fix: true or false")
    errors += _check_extra_args(label, settings.get("extra_args"))
    if not errors:
        errors += _check_context(label, settings)
    return errors


def _check_extra_args(label: str, extra: Any, managed: frozenset[str] = MANAGED_FLAGS) -> list[str]:
    """extra_args must be strings and must not repeat a flag the plan manages."""
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        return [f"{label}: field 'extra_args' is {extra!r}; fix: a list of strings"]
    clashes = sorted({a.split("=", 1)[0] for a in extra} & managed)
    if clashes:
        fields = (
            "batch_size, prompt_tokens, ..."
            if managed is INFINITY_MANAGED_FLAGS
            else "ctx_size, parallel, flash_attn, ..."
        )
        return [
            f"{label}: field 'extra_args' sets {', '.join(clashes)}, which the role manages; "
            f"fix: use the entry's own field ({fields}) instead"
        ]
    return []


def slot_tokens(s: dict[str, Any]) -> int:
    """Tokens one slot must hold: prompt_tokens, plus max_tokens for chat."""
    return s["prompt_tokens"] + (s["max_tokens"] if s["kind"] == "chat" else 0)


def _check_context(label: str, s: dict[str, Any]) -> list[str]:
    """ctx_size // parallel must hold prompt_tokens (+ max_tokens for chat)."""
    need = slot_tokens(s)
    errors = []
    if s["parallel"] == AUTO and s["ctx_size"] != AUTO and s["ctx_size"] < need:
        errors.append(
            f"{label}: field 'ctx_size' ({s['ctx_size']}) holds no slot of prompt_tokens + "
            f"max_tokens = {need} tokens (parallel is 'auto'); fix: raise ctx_size to at least "
            f"{need}, or set it to 'auto' too"
        )
    per_slot = need
    if AUTO not in (s["ctx_size"], s["parallel"]):
        per_slot = s["ctx_size"] // s["parallel"]
    if per_slot < need:
        what = "prompt_tokens + max_tokens" if s["kind"] == "chat" else "prompt_tokens"
        errors.append(
            f"{label}: fields 'ctx_size'/'parallel' give {per_slot} tokens per slot "
            f"({s['ctx_size']} // {s['parallel']}), less than {what} = {need}; fix: raise "
            f"ctx_size to at least {need * s['parallel']}, or lower parallel, max_tokens or "
            "prompt_tokens"
        )
    if s["kind"] == "embedding":
        ubatch = s.get("ubatch_size") or UBATCH_DEFAULT
        if ubatch < s["prompt_tokens"]:
            errors.append(
                f"{label}: field 'ubatch_size' ({ubatch}) is below prompt_tokens "
                f"({s['prompt_tokens']}); an embedding input must fit one batch; fix: set "
                f"ubatch_size and batch_size to at least {s['prompt_tokens']}"
            )
    batch, ubatch = s.get("batch_size"), s.get("ubatch_size")
    if batch is not None and ubatch is not None and batch < ubatch:
        errors.append(
            f"{label}: field 'batch_size' ({batch}) is below ubatch_size ({ubatch}); "
            "fix: batch_size >= ubatch_size"
        )
    return errors


def _check_duplicates(models: list[Any], var_name: str) -> list[str]:
    """alias, name and file must each be unique over the list."""
    errors = []
    for field in ("alias", "name", "file"):
        seen: dict[str, int] = {}
        for index, entry in enumerate(models):
            value = entry.get(field) if isinstance(entry, dict) else None
            if field != "file" and isinstance(entry, dict) and "piece_of" in entry:
                continue  # the files of one model directory share its name
            if not isinstance(value, str) or not value:
                continue
            if value in seen:
                errors.append(
                    f"{_label(var_name, index, entry)}: field '{field}' {value!r} is already used "
                    f"by {var_name}[{seen[value]}]; fix: give each model its own {field}"
                )
            else:
                seen[value] = index
    return errors


def models_validate(
    models: Any,
    *,
    allow_unverified: bool = False,
    allow_http: bool = False,
    var_name: str = "localai_models",
) -> list[str]:
    """Return every problem of the model list as a human sentence (empty list: valid).

    All problems at once, not the first: a user fixing group_vars wants the whole list.
    """
    if not isinstance(models, list) or not models:
        return [f"{var_name} is {models!r}; fix: a non-empty list of model entries"]
    errors: list[str] = []
    for index, entry in enumerate(models):
        label = _label(var_name, index, entry)
        if not isinstance(entry, dict):
            errors.append(f"{label}: entry is {entry!r}; fix: a mapping with name, alias, ...")
            continue
        if "piece_of" in entry:
            errors += _check_piece(label, entry, allow_unverified, allow_http)
            continue
        entry_errors = _check_fields(label, entry) + _check_names(label, entry)
        if is_infinity(entry):
            entry_errors += _check_files(label, entry, allow_unverified, allow_http)
        else:
            entry_errors += _check_source(label, entry, allow_unverified, allow_http)
        if entry.get("kind") in KINDS:
            entry_errors += _check_engine(label, entry_settings(entry))
        errors += entry_errors
    return errors + _check_duplicates(models, var_name)


def chat_template_path(model_path: str) -> str:
    """Where a model entry's chat_template_file is placed: beside the model, as <stem>.jinja.

    ``model_path`` is a model file's path (file names end in .gguf, FILE_RE), on the host or in
    the container; the template's path is the same with ``.jinja`` for ``.gguf``.
    """
    return re.sub(r"\.gguf$", ".jinja", model_path)
