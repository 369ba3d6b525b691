"""Filters for the model list (`localai_models`): validation and the engine plan.

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
    ctx_size      total context of the engine (tokens), split evenly over `parallel` slots
    parallel      slots (concurrent requests) of the engine
    max_tokens    chat: most tokens one reply may generate (passed as --n-predict, so the
                  promise is enforced by the engine)
    prompt_tokens prompt budget per request (chat: prompt; embedding: longest input)
    chat_template chat only: llama-server --chat-template NAME (optional)
    jinja         chat only: true -> --jinja, false -> --no-jinja (optional)
    flash_attn    on | off | auto
    n_gpu_layers  layers offloaded to the GPU (int >= 0, or 'all' / 'auto'); 0 in cpu mode
    batch_size, ubatch_size   optional llama-server batch sizes
    pooling       embedding only: none | mean | cls | last | rank (default mean)
    extra_args    list of extra llama-server arguments (strings), never the managed ones

The context rule: llama-server splits --ctx-size evenly over --parallel slots, so one request
gets ctx_size // parallel tokens. That must hold the prompt budget plus the reply:
chat: ctx_size // parallel >= prompt_tokens + max_tokens; embedding: ctx_size // parallel >=
prompt_tokens and ubatch_size (default 512) >= prompt_tokens (an embedding input is processed
in one physical batch).
"""

from __future__ import annotations

import re
from typing import Any

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - the unit tests run with ansible-core installed
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

KINDS = ("chat", "embedding")
FLASH_ATTN = ("on", "off", "auto")
POOLING = ("none", "mean", "cls", "last", "rank")
GPU_MODES = ("cpu", "gpu", "single", "split", "replicas")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.gguf$")
HF_RESOLVE_RE = re.compile(r"^https?://[^/]+/[^/]+/[^/]+/resolve/[^/]+/.+$")
SHA_LEARN = "huggingface"
UBATCH_DEFAULT = 512

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
)
CHAT_ONLY = ("max_tokens", "chat_template", "jinja")
EMBEDDING_ONLY = ("pooling",)
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
    },
    "embedding": {
        "ctx_size": 2048,
        "parallel": 4,
        "prompt_tokens": 512,
        "flash_attn": "auto",
        "n_gpu_layers": 999,
        "pooling": "mean",
        "extra_args": [],
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


def _is_int(value: Any) -> bool:
    """True for real integers; YAML booleans are ints in Python and must not pass."""
    return isinstance(value, int) and not isinstance(value, bool)


def _settings(entry: dict[str, Any]) -> dict[str, Any]:
    """Return the entry with the kind's defaults filled in (kind assumed valid)."""
    merged = dict(DEFAULTS[entry["kind"]])
    merged.update({k: v for k, v in entry.items() if v is not None})
    return merged


def _check_fields(label: str, entry: dict[str, Any]) -> list[str]:
    """Missing, unknown and kind-specific fields."""
    errors = [
        f"{label}: field '{field}' is missing; fix: add it (see localai_models in "
        "group_vars/all.yml)"
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


def _check_int(label: str, settings: dict[str, Any], field: str, minimum: int) -> list[str]:
    """One integer field with a lower bound."""
    value = settings.get(field)
    if value is None or (_is_int(value) and value >= minimum):
        return []
    return [f"{label}: field '{field}' is {value!r}; fix: an integer >= {minimum}"]


def _check_engine(label: str, settings: dict[str, Any]) -> list[str]:
    """Engine settings: types, enums, and the context-per-slot rule."""
    errors: list[str] = []
    for field, minimum in (
        ("ctx_size", 1),
        ("parallel", 1),
        ("max_tokens", 1),
        ("prompt_tokens", 1),
        ("batch_size", 1),
        ("ubatch_size", 1),
    ):
        errors += _check_int(label, settings, field, minimum)
    if settings.get("flash_attn") not in FLASH_ATTN:
        errors.append(
            f"{label}: field 'flash_attn' is {settings.get('flash_attn')!r}; fix: one of "
            "on, off, auto (quote them: YAML reads a bare on/off as a boolean)"
        )
    ngl = settings.get("n_gpu_layers")
    if not ((_is_int(ngl) and ngl >= 0) or ngl in ("all", "auto")):
        errors.append(
            f"{label}: field 'n_gpu_layers' is {ngl!r}; fix: an integer >= 0, 'all' or 'auto'"
        )
    if settings["kind"] == "embedding" and settings.get("pooling") not in POOLING:
        errors.append(
            f"{label}: field 'pooling' is {settings.get('pooling')!r}; fix: one of "
            + ", ".join(POOLING)
        )
    for field in ("chat_template", "description"):
        if settings.get(field) is not None and not isinstance(settings[field], str):
            errors.append(f"{label}: field '{field}' is {settings[field]!r}; fix: a string")
    if settings.get("jinja") is not None and not isinstance(settings["jinja"], bool):
        errors.append(f"{label}: field 'jinja' is {settings['jinja']!r}; fix: true or false")
    errors += _check_extra_args(label, settings.get("extra_args"))
    if not errors:
        errors += _check_context(label, settings)
    return errors


def _check_extra_args(label: str, extra: Any) -> list[str]:
    """extra_args must be strings and must not repeat a flag the plan manages."""
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        return [f"{label}: field 'extra_args' is {extra!r}; fix: a list of strings"]
    clashes = sorted({a.split("=", 1)[0] for a in extra} & MANAGED_FLAGS)
    if clashes:
        return [
            f"{label}: field 'extra_args' sets {', '.join(clashes)}, which the role manages; "
            "fix: use the entry's own field (ctx_size, parallel, flash_attn, ...) instead"
        ]
    return []


def _check_context(label: str, s: dict[str, Any]) -> list[str]:
    """ctx_size // parallel must hold prompt_tokens (+ max_tokens for chat)."""
    per_slot = s["ctx_size"] // s["parallel"]
    need = s["prompt_tokens"] + (s["max_tokens"] if s["kind"] == "chat" else 0)
    errors = []
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


def localai_models_validate(
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
        entry_errors = _check_fields(label, entry) + _check_names(label, entry)
        entry_errors += _check_source(label, entry, allow_unverified, allow_http)
        if entry.get("kind") in KINDS:
            entry_errors += _check_engine(label, _settings(entry))
        errors += entry_errors
    return errors + _check_duplicates(models, var_name)


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
        if s.get("jinja") is not None:
            args.append("--jinja" if s["jinja"] else "--no-jinja")
        if s.get("chat_template"):
            args += ["--chat-template", s["chat_template"]]
    return args + [str(a) for a in s["extra_args"]]


def _program(kind: str, index: int, name: str) -> str:
    """Supervisor program name: the first engine of a kind keeps the short, documented name."""
    base = "llamacpp-chat" if kind == "chat" else "llamacpp-embeddings"
    if index == 0:
        return base
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{base}-{slug}"


def localai_engine_plan(
    models: Any,
    gpu_mode: str = "gpu",
    *,
    chat_port_base: int = 8090,
    embedding_port_base: int = 8080,
    host: str = "127.0.0.1",
    models_mount: str = "/models",
    allow_unverified: bool = True,
    allow_http: bool = True,
) -> list[dict[str, Any]]:
    """Return the engines to run: one llama-server per model today.

    gpu_mode: 'cpu' (no offload: --n-gpu-layers 0), 'gpu'/'single'/'split' (one engine per
    model on all visible GPUs), 'replicas' (reserved: one chat engine per GPU; until that
    layout is built it also yields one engine per model, gpu null). Ports: chat engines from
    chat_port_base up, embedding engines from embedding_port_base up, in list order.
    Source/sha rules are the models role's business, hence the permissive defaults here.
    """
    if gpu_mode not in GPU_MODES:
        raise AnsibleFilterError(
            f"localai_engine_plan: gpu_mode is {gpu_mode!r}; fix: one of {', '.join(GPU_MODES)}"
        )
    errors = localai_models_validate(
        models, allow_unverified=allow_unverified, allow_http=allow_http
    )
    if errors:
        raise AnsibleFilterError("localai_engine_plan: invalid model list:\n" + "\n".join(errors))
    engines: list[dict[str, Any]] = []
    counters = {"chat": 0, "embedding": 0}
    bases = {"chat": chat_port_base, "embedding": embedding_port_base}
    for entry in models:
        s = _settings(entry)
        index = counters[s["kind"]]
        counters[s["kind"]] += 1
        port = bases[s["kind"]] + index
        model_path = f"{models_mount.rstrip('/')}/{s['file']}"
        engines.append(
            {
                "program": _program(s["kind"], index, s["name"]),
                "kind": s["kind"],
                "model": s["name"],
                "alias": s["alias"],
                "host": host,
                "port": port,
                "model_path": model_path,
                "args": _engine_args(s, host, port, model_path, gpu_mode == "cpu"),
                "gpu": None,
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
                f"localai_engine_plan: engines share {key} {', '.join(dupes)}; fix: move "
                "chat_port_base/embedding_port_base apart or give models distinct names"
            )


def localai_models_lock(
    lock: dict[str, Any], resolved: list[dict[str, Any]], placed: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return the lock file content: learned entries plus trust-on-first-use hashes.

    `lock` is what localai_models_resolve returned (old entries plus checksums learned from the
    source); `placed` is models_placed of one host. A model that had no known checksum
    (origin 'unverified') is recorded with the hash of the bytes actually placed, so every
    later run and every other host must get the same bytes.
    """
    result = {k: dict(v) for k, v in (lock or {}).items()}
    hashes = {p["file"]: p.get("sha256", "") for p in placed or []}
    for item in resolved or []:
        if item.get("origin") == "unverified" and hashes.get(item["file"]):
            result[item["file"]] = {
                "sha256": hashes[item["file"]],
                "source": item.get("url") or item.get("src"),
                "size": item.get("size"),
                "origin": "UNVERIFIED: hash of the first download (trust on first use)",
            }
    return {"models": dict(sorted(result.items()))}


def localai_models_placed(
    files: list[dict[str, Any]], verified: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return models_placed: {name, file, path, sha256} for every model, in list order.

    `files` is the host inspection (sha256 of what was already in place); `verified` the
    results of the verify loop (sha256 of what was just placed), which win.
    """
    fresh = {
        r["item"]["file"]: r.get("sha256", "")
        for r in verified or []
        if isinstance(r, dict) and isinstance(r.get("item"), dict)
    }
    return [
        {
            "name": f["name"],
            "file": f["file"],
            "path": f["path"],
            "sha256": fresh.get(f["file"]) or f.get("sha256", ""),
        }
        for f in files or []
    ]


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {
            "localai_models_validate": localai_models_validate,
            "localai_engine_plan": localai_engine_plan,
            "localai_models_lock": localai_models_lock,
            "localai_models_placed": localai_models_placed,
        }
