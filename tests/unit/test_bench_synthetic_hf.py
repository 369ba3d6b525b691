"""bench/make_synthetic_hf.py: the safetensors writer, the configs and the XLM-R tokenizer file.

Fast: a 1-layer model with 1,000 embedding rows, the safetensors file parsed back with numpy;
the tokenizer built from a tiny made-up vocabulary, and from llama.cpp's
ggml-vocab-nomic-bert-moe.gguf when the fixtures' source tree has it (skipped otherwise). numpy
is the only dependency; the test skips without it.
"""

from __future__ import annotations

import itertools
import json
import struct
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import make_synthetic_hf as hf  # noqa: E402

VOCAB = REPO / ".cache" / "src" / "llama.cpp" / "models" / hf.VOCAB_FILE


def _read_tensors(path: Path) -> tuple[dict, dict]:
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = {"F32": "<f4", "F16": "<f2"}[info["dtype"]]
        out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"])
    return header, out


def test_small_model_dir_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "m"
    rc = hf.main(["--out", str(out), "--layers", "1", "--vocab-size", "1000", "--no-tokenizer"])
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (
        384,
        1,
        1000,
    )
    assert config["type_vocab_size"] == 1 and config["layer_norm_eps"] == 1e-12
    header, tensors = _read_tensors(out / "model.safetensors")
    # 8-byte aligned data; offsets back to back, covering the whole file.
    (n,) = struct.unpack("<Q", (out / "model.safetensors").read_bytes()[:8])
    assert n % 8 == 0
    ends = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    assert ends[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ends))
    assert (out / "model.safetensors").stat().st_size == 8 + n + ends[-1][1]
    assert tensors["embeddings.word_embeddings.weight"].shape == (1000, 384)
    assert tensors["encoder.layer.0.intermediate.dense.weight"].shape == (1536, 384)
    assert tensors["encoder.layer.0.output.dense.weight"].shape == (384, 1536)
    assert tensors["pooler.dense.weight"].shape == (384, 384)
    assert (tensors["embeddings.LayerNorm.weight"] == 1).all()
    assert (tensors["encoder.layer.0.output.dense.bias"] == 0).all()
    w = tensors["encoder.layer.0.attention.self.query.weight"]
    assert 0.015 < float(w.std()) < 0.025 and np.isfinite(w).all()
    assert len(tensors) == 5 + 16 + 2
    # sentence-transformers' files: mean pooling of 384-dim token embeddings, 512 tokens.
    modules = json.loads((out / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    assert kinds == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and pooling["word_embedding_dimension"] == 384
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 512


def test_weights_are_deterministic_per_seed(tmp_path: Path) -> None:
    args = ["--layers", "1", "--vocab-size", "64", "--no-tokenizer"]
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        hf.main(["--out", str(tmp_path / name), "--seed", seed, *args])
    files = {n: (tmp_path / n / "model.safetensors").read_bytes() for n in "abc"}
    assert files["a"] == files["b"] != files["c"]


def test_full_shape_is_e5_small() -> None:
    specs = hf.tensor_specs(hf.BertShape())
    params = sum(int(np.prod(d)) for _, d, _ in specs)
    assert params == 117_653_376  # 250037 x 384 embeddings + 12 layers + pooler
    header = hf.safetensors_header([(n, d) for n, d, _ in specs], "float16")
    assert json.loads(header[8:])["embeddings.word_embeddings.weight"]["dtype"] == "F16"


def test_tokenizer_json_layout() -> None:
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "\u2581a", "b", "<mask>"]
    scores = [0.0, 0.0, 0.0, 0.0, -1.5, -2.5, 0.0]
    data = hf.tokenizer_json(tokens, scores, b"\x00\x01")
    assert data["model"] == {
        "type": "Unigram",
        "unk_id": 3,
        "vocab": [[t, s] for t, s in zip(tokens, scores, strict=True)],
        "byte_fallback": False,
    }
    assert [n["type"] for n in data["normalizer"]["normalizers"]] == [
        "Precompiled",
        "Strip",
        "Replace",
    ]
    assert data["pre_tokenizer"]["prepend_scheme"] == "always"
    assert [a["id"] for a in data["added_tokens"]] == [0, 1, 2, 3, 6]
    assert data["post_processor"]["special_tokens"]["</s>"]["ids"] == [2]
    with pytest.raises(ValueError, match="id order"):
        hf.tokenizer_json(["<pad>", "<s>", "</s>", "<unk>", "<mask>"], [0.0] * 5, b"")


@pytest.mark.skipif(not VOCAB.is_file(), reason=f"no {VOCAB} (scripts/make-fixtures.sh)")
def test_xlmr_vocabulary_from_llama_cpp() -> None:
    tokens, scores, charsmap = hf.read_vocab(VOCAB)
    assert len(tokens) == 250002  # XLM-R's, without the file's [PAD...] rows
    assert tokens[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and tokens[-1] == "<mask>"
    assert len(charsmap) > 100_000
    data = hf.tokenizer_json(tokens, scores, charsmap)
    assert data["added_tokens"][-1]["id"] == 250001
    assert all(s <= 0 for _, s in data["model"]["vocab"])
