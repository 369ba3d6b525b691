#!/usr/bin/env python3
"""Write synthetic GGUF models of real shapes with random weights, for benchmarks.

A GPU host without network cannot download model weights, but time per token depends on the
shapes, the quantisation and the tokenizer, not on the values of the weights. So this writes
files that llama.cpp loads exactly like the real models:

- ``llama3-8b``: Llama-3-8B (32 layers, 4096 hidden, 14336 FFN, 32 heads, 8 KV heads, rope theta
  500000, 128256 vocab, context 8192) at Q8_0, ~8.5 GB, with the real Llama-3 tokenizer copied from
  llama.cpp's ``models/ggml-vocab-llama-bpe.gguf`` and the Llama-3 instruct chat template.
- ``e5-small``: multilingual-e5-small (BERT, 12 layers, 384 hidden, 1536 FFN, 12 heads, vocab
  250037, 512 positions, mean pooling) at F16. Its tokenizer is XLM-R's SentencePiece unigram
  model; the only copy of it in the llama.cpp tree is ``models/ggml-vocab-nomic-bert-moe.gguf``
  (nomic-embed-text-v2 is XLM-R based: same pieces, scores and charsmap, padded to 250048), which
  is cut to e5's 250037 rows. Japanese text therefore splits into the same number of tokens as with
  the real e5, and the cost per token (an embedding lookup plus 12 layers of fixed size) is the
  real model's.
- ``tiny``: a 2-layer Llama with the real Llama-3 tokenizer (~10 MB), for unit tests and for
  exercising the bench harness on a CPU.

Weights are written as ready-made blocks streamed from a small random pool (Q8_0: an fp16 scale
and 32 int8 values per block; F16: normal values), so the cost is disk bandwidth: about half a
minute for 8.5 GB on a fast machine. gguf-py (from the llama.cpp source) writes the header,
metadata and tensor index; it is found through ``--gguf-py``, ``PYTHONPATH`` or the fixtures'
extracted source at ``.cache/src/llama.cpp/gguf-py``.
"""

from __future__ import annotations

import argparse
import importlib
import struct
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GGUF_PY = REPO_ROOT / ".cache" / "src" / "llama.cpp" / "gguf-py"

QK8_0 = 32  # values per Q8_0 block
Q8_0_BLOCK_BYTES = 2 + QK8_0  # fp16 scale + 32 int8
POOL_BYTES = 64 * 1024 * 1024  # random data reused across tensors; a multiple of 2 and 34

# The Llama-3 instruct template (as in Meta's tokenizer_config.json), so chat requests are
# formatted and tokenised the way a real Llama-3-8B-Instruct deployment formats them.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
LLAMA3_EOT_ID = 128009  # <|eot_id|>: what Llama-3 instruct models end a turn with


@dataclass(frozen=True)
class ModelShape:
    """Hyper-parameters of one model family, as llama.cpp reads them from GGUF metadata."""

    name: str
    arch: str  # "llama" or "bert"
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    n_ctx: int
    vocab_file: str  # in llama.cpp's models/ folder
    weight_type: str  # default type of the 2-D weights: "q8_0" or "f16"
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5


SHAPES: dict[str, ModelShape] = {
    "llama3-8b": ModelShape(
        name="Llama-3-8B-Instruct (synthetic)",
        arch="llama",
        n_layer=32,
        n_embd=4096,
        n_ff=14336,
        n_head=32,
        n_head_kv=8,
        n_vocab=128256,
        n_ctx=8192,
        vocab_file="ggml-vocab-llama-bpe.gguf",
        weight_type="q8_0",
        rope_theta=500000.0,
    ),
    "e5-small": ModelShape(
        name="multilingual-e5-small (synthetic)",
        arch="bert",
        n_layer=12,
        n_embd=384,
        n_ff=1536,
        n_head=12,
        n_head_kv=12,
        n_vocab=250037,
        n_ctx=512,
        vocab_file="ggml-vocab-nomic-bert-moe.gguf",
        weight_type="f16",
        norm_eps=1e-12,
    ),
    "tiny": ModelShape(
        name="tiny Llama-3 (synthetic)",
        arch="llama",
        n_layer=2,
        n_embd=64,
        n_ff=128,
        n_head=4,
        n_head_kv=2,
        n_vocab=128256,
        n_ctx=2048,
        vocab_file="ggml-vocab-llama-bpe.gguf",
        weight_type="q8_0",
        rope_theta=500000.0,
    ),
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: GGUF name, numpy-order shape (rows, cols) and storage kind."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "weight" (q8_0/f16 per --type), "f32_ones", "f32_zeros", "f32_random"


def import_gguf(path: Path | None) -> types.ModuleType:
    """Import gguf-py from ``path``, PYTHONPATH or the fixtures' source tree, in that order.

    gguf imports PyYAML only to parse model cards, which this script never does; a stand-in
    module keeps it importable on machines without PyYAML (an offline host may have no pip index).
    """
    candidates = [path] if path else []
    candidates.append(DEFAULT_GGUF_PY)
    try:
        importlib.import_module("yaml")
    except ImportError:
        sys.modules["yaml"] = types.ModuleType("yaml")
    try:
        return importlib.import_module("gguf")
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and (candidate / "gguf" / "__init__.py").is_file():
            sys.path.insert(0, str(candidate))
            return importlib.import_module("gguf")
    raise SystemExit(
        "make_synthetic_gguf: gguf-py not found; pass --gguf-py PATH/llama.cpp/gguf-py, set "
        f"PYTHONPATH, or run scripts/make-fixtures.sh (it extracts {DEFAULT_GGUF_PY})"
    )


def llama_tensors(s: ModelShape) -> list[TensorSpec]:
    """Tensor list of a Llama model as llama.cpp's loader expects it (numpy order)."""
    head_dim = s.n_embd // s.n_head
    kv = head_dim * s.n_head_kv
    out = [
        TensorSpec("token_embd.weight", (s.n_vocab, s.n_embd), "weight"),
        TensorSpec("output_norm.weight", (s.n_embd,), "f32_ones"),
        TensorSpec("output.weight", (s.n_vocab, s.n_embd), "weight"),
    ]
    for i in range(s.n_layer):
        p = f"blk.{i}."
        out += [
            TensorSpec(p + "attn_norm.weight", (s.n_embd,), "f32_ones"),
            TensorSpec(p + "attn_q.weight", (s.n_embd, s.n_embd), "weight"),
            TensorSpec(p + "attn_k.weight", (kv, s.n_embd), "weight"),
            TensorSpec(p + "attn_v.weight", (kv, s.n_embd), "weight"),
            TensorSpec(p + "attn_output.weight", (s.n_embd, s.n_embd), "weight"),
            TensorSpec(p + "ffn_norm.weight", (s.n_embd,), "f32_ones"),
            TensorSpec(p + "ffn_gate.weight", (s.n_ff, s.n_embd), "weight"),
            TensorSpec(p + "ffn_up.weight", (s.n_ff, s.n_embd), "weight"),
            TensorSpec(p + "ffn_down.weight", (s.n_embd, s.n_ff), "weight"),
        ]
    return out


def bert_tensors(s: ModelShape) -> list[TensorSpec]:
    """Tensor list of a BERT encoder as llama.cpp's BERT loader expects it (numpy order).

    Like convert_hf_to_gguf.py's output: 2-D weights in the chosen type, position and token-type
    embeddings, norms and biases in F32; XLM-R models have a single token type.
    """
    e = s.n_embd
    out = [
        TensorSpec("token_embd.weight", (s.n_vocab, e), "weight"),
        TensorSpec("token_types.weight", (1, e), "f32_random"),
        TensorSpec("position_embd.weight", (s.n_ctx, e), "f32_random"),
        TensorSpec("token_embd_norm.weight", (e,), "f32_ones"),
        TensorSpec("token_embd_norm.bias", (e,), "f32_zeros"),
    ]
    for i in range(s.n_layer):
        p = f"blk.{i}."
        for proj in ("attn_q", "attn_k", "attn_v", "attn_output"):
            out += [
                TensorSpec(p + proj + ".weight", (e, e), "weight"),
                TensorSpec(p + proj + ".bias", (e,), "f32_zeros"),
            ]
        out += [
            TensorSpec(p + "attn_output_norm.weight", (e,), "f32_ones"),
            TensorSpec(p + "attn_output_norm.bias", (e,), "f32_zeros"),
            TensorSpec(p + "ffn_up.weight", (s.n_ff, e), "weight"),
            TensorSpec(p + "ffn_up.bias", (s.n_ff,), "f32_zeros"),
            TensorSpec(p + "ffn_down.weight", (e, s.n_ff), "weight"),
            TensorSpec(p + "ffn_down.bias", (e,), "f32_zeros"),
            TensorSpec(p + "layer_output_norm.weight", (e,), "f32_ones"),
            TensorSpec(p + "layer_output_norm.bias", (e,), "f32_zeros"),
        ]
    return out


def tensor_nbytes(spec: TensorSpec, weight_type: str) -> int:
    """Bytes the tensor takes in the file (before alignment padding)."""
    n = int(np.prod(spec.shape))
    if spec.kind != "weight":
        return 4 * n
    if weight_type == "f16":
        return 2 * n
    if spec.shape[-1] % QK8_0:
        raise ValueError(f"{spec.name}: row length {spec.shape[-1]} is not a multiple of {QK8_0}")
    return n // QK8_0 * Q8_0_BLOCK_BYTES


def _q8_0_pool(rng: np.random.Generator) -> np.ndarray:
    """A pool of Q8_0 blocks: fp16 scale in [1e-4, 4e-4] then 32 random int8 quants."""
    n_blocks = POOL_BYTES // Q8_0_BLOCK_BYTES
    blocks = np.empty((n_blocks, Q8_0_BLOCK_BYTES), dtype=np.uint8)
    scales = rng.uniform(1e-4, 4e-4, n_blocks).astype("<f2")
    blocks[:, :2] = scales.view(np.uint8).reshape(n_blocks, 2)
    blocks[:, 2:] = rng.integers(-127, 128, (n_blocks, QK8_0), dtype=np.int8).view(np.uint8)
    return blocks.reshape(-1)


def _f16_pool(rng: np.random.Generator) -> np.ndarray:
    """A pool of fp16 weights drawn from N(0, 0.02), as bytes."""
    values = (rng.standard_normal(POOL_BYTES // 2, dtype=np.float32) * 0.02).astype("<f2")
    return values.view(np.uint8)


def weight_pool(weight_type: str, rng: np.random.Generator) -> np.ndarray:
    """Random bytes laid out as valid ``weight_type`` data, reused for every tensor.

    Q8_0 scales are small positive fp16 values and F16 weights are small normals, so
    activations stay finite: NaNs would not change the cost per token but could trip sampling.
    """
    return _f16_pool(rng) if weight_type == "f16" else _q8_0_pool(rng)


# GGUF metadata value types (gguf.GGUFValueType) and their struct formats.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q"}
_SCALAR_FORMATS[12] = "d"
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_metadata(path: Path, prefix: str) -> dict[str, tuple[int, int | None, Any]]:
    """Read the metadata keys starting with ``prefix``: key -> (type, array item type, value).

    A plain sequential parser: gguf.GGUFReader builds a numpy view per array item and takes
    ~8 s for the Llama-3 vocab's 400,000 strings; this takes well under a second.
    """
    data = path.read_bytes()
    if data[:4] != b"GGUF":
        raise SystemExit(f"make_synthetic_gguf: {path} is not a GGUF file")
    pos = 4 + 4 + 8  # magic, version, tensor count
    (n_kv,) = struct.unpack_from("<Q", data, pos)
    pos += 8

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n
        return data[pos - n : pos].decode("utf-8")

    def scalar(vtype: int) -> Any:
        nonlocal pos
        if vtype == _GGUF_STRING:
            return string()
        fmt = "<" + _SCALAR_FORMATS[vtype]
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    out: dict[str, tuple[int, int | None, Any]] = {}
    for _ in range(n_kv):
        key = string()
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if vtype != _GGUF_ARRAY:
            value, sub = scalar(vtype), None
        else:
            sub, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if sub == _GGUF_STRING:
                value = [string() for _ in range(n)]
            else:
                fmt = "<" + _SCALAR_FORMATS[sub] * n
                value = list(struct.unpack_from(fmt, data, pos))
                pos += struct.calcsize(fmt)
        if key.startswith(prefix):
            out[key] = (vtype, sub, value)
    return out


def copy_tokenizer(
    gguf: Any, writer: Any, vocab_path: Path, n_vocab: int, overrides: dict[str, Any]
) -> None:
    """Copy every ``tokenizer.*`` key of a llama.cpp vocab file, keeping each key's GGUF type.

    Types matter: llama.cpp insists on e.g. a UINT8 precompiled charsmap, which a plain
    ``add_array`` of Python ints would turn into INT32. Per-token arrays are cut to ``n_vocab``;
    keys in ``overrides`` keep their type but take the given value.
    """
    per_token = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}
    for key, (vtype, sub, found) in read_metadata(vocab_path, "tokenizer.").items():
        value = overrides.get(key, found)
        if key in per_token:
            if len(value) < n_vocab:
                raise SystemExit(f"{vocab_path.name} has {len(value)} tokens < {n_vocab}")
            value = value[:n_vocab]
        writer.add_key_value(
            key,
            value,
            gguf.GGUFValueType(vtype),
            sub_type=None if sub is None else gguf.GGUFValueType(sub),
        )


def add_hparams(gguf: Any, writer: Any, s: ModelShape, weight_type: str) -> None:
    """Write the architecture keys llama.cpp reads for ``s`` (same keys the converter writes)."""
    a = s.arch
    ftype = (
        gguf.LlamaFileType.MOSTLY_F16 if weight_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    )
    writer.add_name(s.name)
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_uint32(f"{a}.block_count", s.n_layer)
    writer.add_uint32(f"{a}.context_length", s.n_ctx)
    writer.add_uint32(f"{a}.embedding_length", s.n_embd)
    writer.add_uint32(f"{a}.feed_forward_length", s.n_ff)
    writer.add_uint32(f"{a}.attention.head_count", s.n_head)
    if a == "llama":
        writer.add_uint32(f"{a}.attention.head_count_kv", s.n_head_kv)
        writer.add_float32(f"{a}.rope.freq_base", s.rope_theta)
        writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", s.norm_eps)
        writer.add_uint32(f"{a}.vocab_size", s.n_vocab)
        writer.add_uint32(f"{a}.rope.dimension_count", s.n_embd // s.n_head)
    else:
        writer.add_float32(f"{a}.attention.layer_norm_epsilon", s.norm_eps)
        writer.add_bool(f"{a}.attention.causal", False)
        writer.add_uint32(f"{a}.pooling_type", int(gguf.PoolingType.MEAN))


def write_stream(out: BinaryIO, pool: np.ndarray, nbytes: int, start: int) -> None:
    """Write ``nbytes`` from ``pool`` starting at ``start``, wrapping around (no big copies)."""
    view = memoryview(pool)
    pos = start % len(pool)
    left = nbytes
    while left:
        n = min(left, len(pool) - pos)
        out.write(view[pos : pos + n])
        left -= n
        pos = 0


def write_model(gguf: Any, shape: ModelShape, weight_type: str, out: Path, vocab_dir: Path) -> int:
    """Write the whole GGUF to ``out`` (atomically via a .part file); return its size in bytes."""
    rng = np.random.default_rng(0)
    specs = llama_tensors(shape) if shape.arch == "llama" else bert_tensors(shape)
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), shape.arch)
    add_hparams(gguf, writer, shape, weight_type)
    overrides = {"tokenizer.ggml.eos_token_id": LLAMA3_EOT_ID} if shape.arch == "llama" else {}
    copy_tokenizer(gguf, writer, vocab_dir / shape.vocab_file, shape.n_vocab, overrides)
    if shape.arch == "llama":
        writer.add_string("tokenizer.chat_template", LLAMA3_CHAT_TEMPLATE)
    for spec in specs:
        nbytes = tensor_nbytes(spec, weight_type)
        if spec.kind != "weight":
            writer.add_tensor_info(spec.name, spec.shape, np.dtype(np.float32), nbytes)
        elif weight_type == "f16":
            writer.add_tensor_info(spec.name, spec.shape, np.dtype(np.float16), nbytes)
        else:
            byte_shape = (*spec.shape[:-1], spec.shape[-1] // QK8_0 * Q8_0_BLOCK_BYTES)
            writer.add_tensor_info(
                spec.name, byte_shape, np.dtype(np.uint8), nbytes, gguf.GGMLQuantizationType.Q8_0
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    # Tensor data, streamed: the same layout as GGUFWriter.write_tensor_data (each tensor aligned
    # to the writer's alignment, in the order of the index), without building 0.5 GB arrays.
    fout = writer.fout[0]
    pool = weight_pool(weight_type, rng)
    align = writer.data_alignment
    for spec in specs:
        writer.write_padding(fout, fout.tell(), align)
        nbytes = tensor_nbytes(spec, weight_type)
        if spec.kind == "weight":
            unit = Q8_0_BLOCK_BYTES if weight_type == "q8_0" else 2
            start = int(rng.integers(0, len(pool) // unit)) * unit  # whole blocks only
            write_stream(fout, pool, nbytes, start)
        else:
            small_tensor(spec, rng).tofile(fout)
        writer.write_padding(fout, nbytes, align)
    writer.close()
    tmp.replace(out)
    return out.stat().st_size


def small_tensor(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """Values for the small F32 tensors: norms are ones, biases zeros, embeddings small."""
    if spec.kind == "f32_ones":
        return np.ones(spec.shape, dtype="<f4")
    if spec.kind == "f32_zeros":
        return np.zeros(spec.shape, dtype="<f4")
    return (rng.standard_normal(spec.shape, dtype=np.float32) * 0.02).astype("<f4")


def default_vocab_dir(gguf: Any) -> Path:
    """llama.cpp's models/ folder next to the gguf-py that was imported, else the fixtures'."""
    beside = Path(gguf.__file__).resolve().parents[2] / "models"
    return beside if beside.is_dir() else DEFAULT_GGUF_PY.parent / "models"


def main(argv: list[str] | None = None) -> int:
    """Parse options, write the model, print its size and the time it took."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--out", type=Path, required=True, help="GGUF file to write")
    parser.add_argument(
        "--type", choices=["q8_0", "f16"], help="type of the 2-D weights (default: per shape)"
    )
    parser.add_argument("--gguf-py", type=Path, help="llama.cpp's gguf-py folder")
    parser.add_argument("--vocab-dir", type=Path, help="llama.cpp's models/ folder")
    args = parser.parse_args(argv)
    gguf = import_gguf(args.gguf_py)
    shape = SHAPES[args.shape]
    weight_type = args.type or shape.weight_type
    vocab_dir = args.vocab_dir or default_vocab_dir(gguf)
    if not (vocab_dir / shape.vocab_file).is_file():
        raise SystemExit(f"make_synthetic_gguf: {vocab_dir / shape.vocab_file} not found")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    size = write_model(gguf, shape, weight_type, args.out, vocab_dir)
    took = time.monotonic() - began
    print(
        f"make_synthetic_gguf: wrote {args.out} ({args.shape}, {weight_type}, "
        f"{size / 1e9:.2f} GB) in {took:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
