#!/usr/bin/env python3
"""Same vectors? An OpenAI-compatible embeddings endpoint against sentence-transformers.

Sends Japanese and English inputs (8 documents of 512 characters each, bench/loadgen.py's
Japanese documents and English ones made the same way, plus one short "query: ..." per
language) to ``--url``, each alone (single) and all in one request (batched), as float lists and
as base64, and compares every vector with sentence-transformers' on the same model directory
(``--reference-dir``, float32, on ``--device``): cosine per input, minimum per language and mode.
Also checks that sentence-transformers' tokenizer gives the ids of the directory's
tokenizer.json (the Hugging Face ``tokenizers`` library), and reports the token counts.

Run it with a Python that imports sentence-transformers (the reference); the endpoint may be
an engine (Infinity, llama-server) or the proxy (``--api-key``). Exit status 1 when a cosine is
below ``--min-cosine`` (0.9999) or a request fails.

    python3 bench/embed_cosine.py --url http://127.0.0.1:8080 --model embed \
        --reference-dir models/e5-small-hf --out cosine.json
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import random
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import make_japanese_doc

EN_SENTENCES = (
    "The city council approved a new budget for public transport and road repairs.",
    "Machine learning models find regular patterns in large amounts of data.",
    "The library near the station stays open until nine in the evening on weekdays.",
    "Researchers repeated the experiment several times to measure the new material.",
    "Questions from customers are answered within two business days as a rule.",
    "In spring the cherry trees bloom and many visitors come to the old temples.",
    "Heavy rain is expected to disrupt trains and flights across the region tonight.",
    "The software supports several languages and its settings are easy to change.",
)


def make_english_doc(index: int, chars: int = 512) -> str:
    """An English document of exactly ``chars`` characters, different for every index."""
    rng = random.Random(index)
    text = f"Document {index}. "
    while len(text) < chars:
        text += rng.choice(EN_SENTENCES) + " "
    return text[:chars]


def inputs(docs: int = 8) -> dict[str, list[str]]:
    """The test inputs per language: documents, then one short query."""
    return {
        "ja": [make_japanese_doc(900_000 + i) for i in range(docs)] + ["query: 東京の天気は"],
        "en": [make_english_doc(900_000 + i) for i in range(docs)]
        + ["query: how much protein should a female eat"],
    }


def post_embeddings(
    url: str, model: str, texts: list[str], encoding: str, api_key: str | None
) -> list[list[float]]:
    """One /v1/embeddings request; the vectors in input order, decoded from base64 if asked."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = {"model": model, "input": texts if len(texts) > 1 else texts[0]}
    body["encoding_format"] = encoding
    base = parts.path.rstrip("/").removesuffix("/v1")
    conn.request("POST", base + "/v1/embeddings", json.dumps(body), headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {raw[:300]!r}")
    data = sorted(json.loads(raw)["data"], key=lambda d: d["index"])
    out = []
    for item in data:
        vec = item["embedding"]
        if encoding == "base64":
            if not isinstance(vec, str):
                raise RuntimeError("base64 asked, got a list")
            raw_vec = base64.b64decode(vec)
            import numpy as np  # noqa: PLC0415 - the reference Python has numpy

            vec = np.frombuffer(raw_vec, dtype="<f4").astype(float).tolist()
        out.append(vec)
    if len(out) != len(texts):
        raise RuntimeError(f"{len(out)} vectors for {len(texts)} inputs")
    return out


def cosine(a: Any, b: Any) -> float:
    import numpy as np  # noqa: PLC0415

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True, help="model name sent in requests")
    p.add_argument("--api-key")
    p.add_argument("--reference-dir", type=Path, required=True, help="sentence-transformers dir")
    p.add_argument("--device", default="cuda")
    p.add_argument("--min-cosine", type=float, default=0.9999)
    p.add_argument("--label", default="")
    p.add_argument("--out", type=Path, help="append the result (one JSON line)")
    args = p.parse_args(argv)

    import numpy as np  # noqa: PLC0415
    import sentence_transformers  # noqa: PLC0415
    import tokenizers  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    began = time.monotonic()
    texts = inputs()
    reference = sentence_transformers.SentenceTransformer(
        str(args.reference_dir), device=args.device, model_kwargs={"dtype": torch.float32}
    )
    tok_file = tokenizers.Tokenizer.from_file(str(args.reference_dir / "tokenizer.json"))
    result: dict[str, Any] = {
        "label": args.label,
        "url": args.url,
        "reference": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokenizers": tokenizers.__version__,
            "dtype": "float32",
            "device": args.device,
        },
        "min_cosine": {},
        "tokens": {},
    }
    failures = 0
    for lang, items in texts.items():
        ref = reference.encode(items, batch_size=len(items), convert_to_numpy=True)
        ids_st = reference.tokenizer(items)["input_ids"]
        ids_file = [e.ids for e in tok_file.encode_batch(items)]
        result["tokens"][lang] = {
            "per_input": [len(i) for i in ids_st],
            "st_ids_equal_tokenizer_json": ids_st == ids_file,
        }
        for encoding in ("float", "base64"):
            single = [
                post_embeddings(args.url, args.model, [t], encoding, args.api_key)[0] for t in items
            ]
            batched = post_embeddings(args.url, args.model, items, encoding, args.api_key)
            for mode, got in (("single", single), ("batched", batched)):
                cos = [cosine(g, r) for g, r in zip(got, ref, strict=True)]
                norms = [float(np.linalg.norm(g)) for g in got]
                key = f"{lang} {mode} {encoding}"
                result["min_cosine"][key] = round(min(cos), 7)
                result.setdefault("norms", {})[key] = [round(min(norms), 5), round(max(norms), 5)]
                failures += min(cos) < args.min_cosine
    result["passed"] = failures == 0
    result["seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(result))
    if args.out:
        with args.out.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(result) + "\n")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
