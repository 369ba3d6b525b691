#!/usr/bin/env python3
"""Write a Hugging Face / sentence-transformers model directory of multilingual-e5-small's shape.

Random, seeded weights; the real XLM-R tokenizer. For engines that run the official model files
(Infinity, sentence-transformers) on a machine that cannot download them, the way
make_synthetic_gguf.py's ``--shape e5-small`` serves llama-server: the cost per document depends
on the shape and the token count, not on the values of the weights.

What it writes into ``--out``:

- ``config.json``: BertModel, 12 layers, hidden 384, 12 heads, intermediate 1536, vocab 250037,
  512 positions, 1 token type, layer_norm_eps 1e-12, GELU (multilingual-e5-small's shape).
- ``model.safetensors``: every BertModel weight (pooler included, so loading leaves nothing to
  random initialisation), written directly in the safetensors format with numpy (an 8-byte
  little-endian header length, a JSON header, raw little-endian data); F32 like the published
  file (472 MB), or ``--dtype float16``. Linear and embedding weights ~ N(0, 0.02) from
  ``numpy.random.default_rng(--seed)`` in a fixed order, biases 0, LayerNorm weights 1: the same
  seed gives the same bytes.
- ``tokenizer.json`` (+ ``tokenizer_config.json``, ``special_tokens_map.json``): XLM-RoBERTa's
  SentencePiece unigram model rebuilt from llama.cpp's ``models/ggml-vocab-nomic-bert-moe.gguf``
  (nomic-embed-text-v2's vocabulary, which is XLM-R's: the same 250002 pieces, scores and
  precompiled normalisation charsmap, padded to 250048) exactly as transformers'
  ``XLMRobertaConverter`` (4.57) builds it: Unigram with unk id 3, normaliser Precompiled +
  right strip + runs of spaces to one "▁", Metaspace pre-tokenizer and decoder (prepend always),
  ``<s> $A </s>`` post-processor. The model's embedding matrix keeps e5's 250037 rows (ids past
  the tokenizer's 250002 are never produced).
- ``modules.json``, ``sentence_bert_config.json`` (max_seq_length 512), ``1_Pooling/config.json``
  (mean pooling), ``2_Normalize/``: sentence-transformers' layout of the e5 repositories.

Needs numpy only (the vocabulary file is parsed with make_synthetic_gguf.read_metadata, no
gguf-py). The vocabulary is found through ``--vocab`` or llama.cpp's ``models/`` folder as
make_synthetic_gguf.py finds it (``--vocab-dir``, else the fixtures' ``.cache/src/llama.cpp``).

    python3 bench/make_synthetic_hf.py --out models/e5-small-hf          # 0.47 GB, a few seconds
    python3 bench/make_synthetic_hf.py --out models/t --layers 1 --vocab-size 1000 --no-tokenizer
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_synthetic_gguf import DEFAULT_GGUF_PY, read_metadata

VOCAB_FILE = "ggml-vocab-nomic-bert-moe.gguf"
TOKEN_TYPE_PAD = 5  # llama.cpp's LLAMA_TOKEN_TYPE_UNUSED: the vocabulary's padding rows
SAFETENSORS_DTYPES = {"float32": ("F32", "<f4"), "float16": ("F16", "<f2")}
METASPACE = "\u2581"  # "▁"


@dataclass(frozen=True)
class BertShape:
    """The hyper-parameters config.json carries (multilingual-e5-small's by default)."""

    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    vocab_size: int = 250037
    max_position_embeddings: int = 512
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-12


def model_config(shape: BertShape, dtype: str = "float32") -> dict[str, Any]:
    """config.json of a BertModel of ``shape`` (keys as transformers writes them)."""
    return {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "model_type": "bert",
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "torch_dtype": dtype,
        # Without it transformers 4.57 warns on every load that the tokenizer may carry
        # Mistral's faulty regex (its check reads the version that wrote config.json).
        "transformers_version": "4.29.0.dev0",
        "use_cache": True,
        **asdict(shape),
    }


def tensor_specs(shape: BertShape) -> list[tuple[str, tuple[int, ...], str]]:
    """Every BertModel weight: (name, shape, init) with init "normal", "zeros" or "ones".

    Names and shapes as BertModel.save_pretrained writes them (Linear weights are (out, in)).
    """
    h, f = shape.hidden_size, shape.intermediate_size
    specs: list[tuple[str, tuple[int, ...], str]] = [
        ("embeddings.word_embeddings.weight", (shape.vocab_size, h), "normal"),
        ("embeddings.position_embeddings.weight", (shape.max_position_embeddings, h), "normal"),
        ("embeddings.token_type_embeddings.weight", (shape.type_vocab_size, h), "normal"),
        ("embeddings.LayerNorm.weight", (h,), "ones"),
        ("embeddings.LayerNorm.bias", (h,), "zeros"),
    ]
    for i in range(shape.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value"):
            specs += [(p + name + ".weight", (h, h), "normal"), (p + name + ".bias", (h,), "zeros")]
        specs += [
            (p + "attention.output.dense.weight", (h, h), "normal"),
            (p + "attention.output.dense.bias", (h,), "zeros"),
            (p + "attention.output.LayerNorm.weight", (h,), "ones"),
            (p + "attention.output.LayerNorm.bias", (h,), "zeros"),
            (p + "intermediate.dense.weight", (f, h), "normal"),
            (p + "intermediate.dense.bias", (f,), "zeros"),
            (p + "output.dense.weight", (h, f), "normal"),
            (p + "output.dense.bias", (h,), "zeros"),
            (p + "output.LayerNorm.weight", (h,), "ones"),
            (p + "output.LayerNorm.bias", (h,), "zeros"),
        ]
    specs += [("pooler.dense.weight", (h, h), "normal"), ("pooler.dense.bias", (h,), "zeros")]
    return specs


def safetensors_header(
    tensors: list[tuple[str, tuple[int, ...]]], dtype: str, metadata: dict[str, str] | None = None
) -> bytes:
    """The 8-byte length + JSON header for tensors stored back to back in the given order.

    The JSON is padded with spaces to a multiple of 8 bytes (as the reference writer does), so
    the data that follows is aligned.
    """
    code, np_dtype = SAFETENSORS_DTYPES[dtype]
    itemsize = np.dtype(np_dtype).itemsize
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dims in tensors:
        n = int(np.prod(dims, dtype=np.int64)) * itemsize
        header[name] = {"dtype": code, "shape": list(dims), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def tensor_values(
    specs: list[tuple[str, tuple[int, ...], str]], seed: int, dtype: str
) -> Iterator[np.ndarray]:
    """The values of each tensor, in order, from one seeded generator."""
    rng = np.random.default_rng(seed)
    np_dtype = SAFETENSORS_DTYPES[dtype][1]
    for _, dims, init in specs:
        if init == "ones":
            yield np.ones(dims, dtype=np_dtype)
        elif init == "zeros":
            yield np.zeros(dims, dtype=np_dtype)
        else:
            yield (rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)).astype(np_dtype)


def write_safetensors(
    out: BinaryIO, specs: list[tuple[str, tuple[int, ...], str]], seed: int, dtype: str
) -> None:
    """Header, then each tensor's little-endian bytes (C order), generated one at a time."""
    out.write(safetensors_header([(n, d) for n, d, _ in specs], dtype))
    for values in tensor_values(specs, seed, dtype):
        out.write(np.ascontiguousarray(values).tobytes())


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (for checks)."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def _added(token_id: int, content: str, lstrip: bool = False) -> dict[str, Any]:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": lstrip,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def tokenizer_json(tokens: list[str], scores: list[float], charsmap: bytes) -> dict[str, Any]:
    """tokenizer.json of XLM-R (as XLMRobertaConverter + XLMRobertaTokenizerFast save it).

    ``tokens``/``scores``: the vocabulary in the Hugging Face model's id order (<s> <pad> </s>
    <unk>, the SentencePiece pieces, <mask>), which is how llama.cpp's vocab file stores it.
    """
    ids = {t: i for i, t in enumerate(tokens)}
    for special in ("<s>", "<pad>", "</s>", "<unk>", "<mask>"):
        if special not in ids:
            raise ValueError(f"vocabulary has no {special}")
    if ids["<unk>"] != 3 or ids["<s>"] != 0 or ids["</s>"] != 2:
        raise ValueError("not XLM-R's id order (<s>=0, </s>=2, <unk>=3)")
    specials = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"}
    vocab = [[t, 0.0 if t in specials else float(s)] for t, s in zip(tokens, scores, strict=True)]
    meta = {
        "type": "Metaspace",
        "replacement": METASPACE,
        "prepend_scheme": "always",
        "split": True,
    }

    def template(*parts: tuple[str, str, int]) -> list[dict[str, Any]]:
        return [
            {"SpecialToken": {"id": v, "type_id": t}}
            if kind == "special"
            else {"Sequence": {"id": v, "type_id": t}}
            for kind, v, t in parts
        ]

    s, e = ("special", "<s>", 0), ("special", "</s>", 0)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            _added(0, "<s>"),
            _added(1, "<pad>"),
            _added(2, "</s>"),
            _added(3, "<unk>"),
            _added(ids["<mask>"], "<mask>", lstrip=True),
        ],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {
                    "type": "Precompiled",
                    "precompiled_charsmap": base64.b64encode(charsmap).decode(),
                },
                {"type": "Strip", "strip_left": False, "strip_right": True},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": METASPACE},
            ],
        },
        "pre_tokenizer": meta,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": template(s, ("seq", "A", 0), e),
            "pair": template(s, ("seq", "A", 0), e, e, ("seq", "B", 0), e),
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]},
            },
        },
        "decoder": dict(meta),
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": False},
    }


def tokenizer_config(mask_id: int, max_length: int) -> dict[str, Any]:
    """tokenizer_config.json of an XLM-R fast tokenizer (multilingual-e5's settings)."""
    decoder = {
        str(i): {k: v for k, v in _added(i, c, lstrip=(c == "<mask>")).items() if k != "id"}
        for i, c in ((0, "<s>"), (1, "<pad>"), (2, "</s>"), (3, "<unk>"), (mask_id, "<mask>"))
    }
    return {
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": True,
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": "<mask>",
        "model_max_length": max_length,
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "tokenizer_class": "XLMRobertaTokenizer",
        "unk_token": "<unk>",
    }


SPECIAL_TOKENS_MAP = {
    "bos_token": "<s>",
    "cls_token": "<s>",
    "eos_token": "</s>",
    "mask_token": {
        "content": "<mask>",
        "lstrip": True,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    },
    "pad_token": "<pad>",
    "sep_token": "</s>",
    "unk_token": "<unk>",
}


def read_vocab(path: Path) -> tuple[list[str], list[float], bytes]:
    """XLM-R's tokens, scores and precompiled charsmap from llama.cpp's vocab file, without the
    file's padding rows (token type UNUSED, "[PAD...]")."""
    md = read_metadata(path, "tokenizer.")
    tokens = md["tokenizer.ggml.tokens"][2]
    scores = md["tokenizer.ggml.scores"][2]
    types = md["tokenizer.ggml.token_type"][2]
    if md.get("tokenizer.ggml.model", (0, None, ""))[2] != "t5":
        raise SystemExit(f"make_synthetic_hf: {path} is not a SentencePiece unigram vocabulary")
    n = next((i for i, t in enumerate(types) if t == TOKEN_TYPE_PAD), len(tokens))
    charsmap = bytes(md["tokenizer.ggml.precompiled_charsmap"][2])
    return tokens[:n], [float(s) for s in scores[:n]], charsmap


def sentence_transformers_files(shape: BertShape, max_seq_length: int) -> dict[str, Any]:
    """sentence-transformers' files (relative path -> JSON) for Transformer + mean Pooling +
    Normalize, as the multilingual-e5 repositories lay them out."""
    return {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "1_Pooling/config.json": {
            "word_embedding_dimension": shape.hidden_size,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def find_vocab(args: argparse.Namespace) -> Path:
    """--vocab, else VOCAB_FILE in --vocab-dir or the fixtures' llama.cpp models/ folder."""
    if args.vocab:
        return args.vocab
    folder = args.vocab_dir or DEFAULT_GGUF_PY.parent / "models"
    return folder / VOCAB_FILE


def write_model_dir(
    out: Path,
    shape: BertShape,
    *,
    seed: int = 0,
    dtype: str = "float32",
    vocab: Path | None = None,
    max_seq_length: int = 512,
) -> dict[str, Any]:
    """Write the whole directory; return a summary (sizes, tokenizer size)."""
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"out": str(out), "seed": seed, "dtype": dtype, **asdict(shape)}
    write_json(out / "config.json", model_config(shape, dtype))
    for rel, data in sentence_transformers_files(shape, max_seq_length).items():
        write_json(out / rel, data)
    (out / "2_Normalize").mkdir(exist_ok=True)
    if vocab is not None:
        tokens, scores, charsmap = read_vocab(vocab)
        if len(tokens) > shape.vocab_size:
            raise SystemExit(
                f"make_synthetic_hf: tokenizer has {len(tokens)} tokens > vocab_size "
                f"{shape.vocab_size}"
            )
        data = tokenizer_json(tokens, scores, charsmap)
        (out / "tokenizer.json").write_text(
            json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
        )
        write_json(
            out / "tokenizer_config.json", tokenizer_config(tokens.index("<mask>"), max_seq_length)
        )
        write_json(out / "special_tokens_map.json", SPECIAL_TOKENS_MAP)
        summary["tokenizer_tokens"] = len(tokens)
    specs = tensor_specs(shape)
    tmp = out / "model.safetensors.part"
    with tmp.open("wb") as fh:
        write_safetensors(fh, specs, seed, dtype)
    tmp.replace(out / "model.safetensors")
    summary["tensors"] = len(specs)
    summary["parameters"] = int(sum(np.prod(d, dtype=np.int64) for _, d, _ in specs))
    summary["safetensors_bytes"] = (out / "model.safetensors").stat().st_size
    return summary


def main(argv: list[str] | None = None) -> int:
    """Parse options, write the directory, print a one-line summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--seed", type=int, default=0, help="weights' random seed (default 0)")
    p.add_argument("--dtype", choices=sorted(SAFETENSORS_DTYPES), default="float32")
    p.add_argument("--layers", type=int, default=BertShape.num_hidden_layers)
    p.add_argument(
        "--vocab-size", type=int, default=BertShape.vocab_size, help="embedding rows (250037)"
    )
    p.add_argument("--vocab", type=Path, help=f"llama.cpp's {VOCAB_FILE}")
    p.add_argument("--vocab-dir", type=Path, help="llama.cpp's models/ folder")
    p.add_argument("--no-tokenizer", action="store_true", help="weights and configs only")
    args = p.parse_args(argv)
    shape = BertShape(num_hidden_layers=args.layers, vocab_size=args.vocab_size)
    vocab = None
    if not args.no_tokenizer:
        vocab = find_vocab(args)
        if not vocab.is_file():
            raise SystemExit(
                f"make_synthetic_hf: {vocab} not found; pass --vocab/--vocab-dir, run "
                "scripts/make-fixtures.sh, or use --no-tokenizer"
            )
    began = time.monotonic()
    summary = write_model_dir(args.out, shape, seed=args.seed, dtype=args.dtype, vocab=vocab)
    summary["seconds"] = round(time.monotonic() - began, 1)
    print("make_synthetic_hf: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
