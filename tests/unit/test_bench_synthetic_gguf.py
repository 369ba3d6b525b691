"""bench/make_synthetic_gguf.py writes a GGUF that gguf-py reads back with the intended shape.

gguf-py needs numpy, which the lint/test venv does not carry, so the generator and the reader
run in a subprocess under the first Python that can import both: this interpreter (with
GGUF_PY, PYTHONPATH or the fixtures' .cache/src/llama.cpp/gguf-py on its path) or the fixtures'
converter venv (.cache/convert-venv, built by scripts/make-fixtures.sh). The test skips only
when none can.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GGUF_PY = Path(os.environ.get("GGUF_PY", REPO / ".cache" / "src" / "llama.cpp" / "gguf-py"))
CANDIDATES = [Path(sys.executable), REPO / ".cache" / "convert-venv" / "bin" / "python"]

READ_BACK = r"""
import json, sys
import numpy as np
import gguf
r = gguf.GGUFReader(sys.argv[1])
f = lambda k: r.fields[k].contents() if k in r.fields else None
t = {x.name: x for x in r.tensors}
k = t["blk.0.attn_k.weight"]
blocks = np.asarray(k.data).reshape(-1, 34)
print(json.dumps({
    "arch": f("general.architecture"),
    "tensors": len(r.tensors),
    "names": sorted(t)[:3],
    "k_shape": [int(x) for x in k.shape],
    "k_type": k.tensor_type.name,
    "embd_shape": [int(x) for x in t["token_embd.weight"].shape],
    "scales_finite": bool(np.isfinite(blocks[:, :2].copy().view("<f2")).all()),
    "norm": float(np.asarray(t["output_norm.weight"].data)[0]),
    "vocab": len(r.fields["tokenizer.ggml.tokens"].data),
    "merges": len(r.fields["tokenizer.ggml.merges"].data),
    "eos": f("tokenizer.ggml.eos_token_id"),
    "template": "<|start_header_id|>" in (f("tokenizer.chat_template") or ""),
    "heads_kv": f("llama.attention.head_count_kv"),
    "rope": f("llama.rope.freq_base"),
    "ftype": f("general.file_type"),
}))
"""


def _python_with_gguf() -> tuple[str, dict[str, str]] | None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(GGUF_PY), env.get("PYTHONPATH")) if p)
    for python in CANDIDATES:
        if not python.exists():
            continue
        probe = subprocess.run(
            [str(python), "-c", "import numpy, gguf"], env=env, capture_output=True, check=False
        )
        if probe.returncode == 0:
            return str(python), env
    return None


@pytest.fixture(scope="module")
def gguf_python():
    found = _python_with_gguf()
    if found is None:
        pytest.skip(
            "no Python here imports gguf-py and numpy: run scripts/make-fixtures.sh "
            "(extracts .cache/src/llama.cpp/gguf-py, builds .cache/convert-venv) or set GGUF_PY"
        )
    return found


def test_tiny_shape_reads_back_with_gguf_py(gguf_python, tmp_path):
    python, env = gguf_python
    out = tmp_path / "tiny.gguf"
    script = str(REPO / "bench" / "make_synthetic_gguf.py")
    gen = subprocess.run(
        [python, script, "--shape", "tiny", "--out", str(out), "--gguf-py", str(GGUF_PY)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert gen.returncode == 0, gen.stderr
    assert not out.with_name("tiny.gguf.part").exists()
    read = subprocess.run(
        [python, "-c", READ_BACK, str(out)], env=env, capture_output=True, text=True, check=False
    )
    assert read.returncode == 0, read.stderr
    facts = json.loads(read.stdout)
    assert facts["arch"] == "llama"
    assert facts["tensors"] == 3 + 2 * 9  # embeddings, norm, output + 9 per layer
    assert facts["k_type"] == "Q8_0" and facts["ftype"] == 7
    assert facts["k_shape"] == [64, 32]  # ne0 = hidden, ne1 = 2 KV heads x head dim 16
    assert facts["embd_shape"] == [64, 128256]
    assert facts["scales_finite"] and facts["norm"] == 1.0
    assert facts["vocab"] == 128256 and facts["merges"] > 200_000  # the real Llama-3 vocab
    assert facts["eos"] == 128009 and facts["template"]
    assert facts["heads_kv"] == 2 and facts["rope"] == 500000.0
