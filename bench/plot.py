#!/usr/bin/env python3
"""Plot bench/loadgen.py results: aggregate tok/s and TTFT against concurrency, one line a setup.

Inputs are loadgen's JSON Lines files, given as ``NAME=FILE`` (or just ``FILE``: the name is then
the ``setup`` stored in the rows, else the file's stem). ``NAME=FILE@SETUP|SETUP...`` takes only
the rows of those setups, so one line can join levels measured under different labels. Writes
into ``--out-dir``:

- ``chat-throughput.png``: aggregate decode tok/s against concurrent clients;
- ``chat-ttft.png``: TTFT p50 (solid) and p95 (dashed) against concurrent clients;
- ``embeddings-throughput.png``: docs/s against clients, one line per setup and batch size
  (only when embeddings rows are present).

Needs matplotlib, which a GPU host may lack: copy the JSON files to a machine that has it
(``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

Series = dict[str, list[dict[str, Any]]]


def load_series(specs: list[str]) -> tuple[Series, Series]:
    """Read ``NAME=FILE`` specs into chat and embeddings series keyed by legend name.

    When a file holds several runs of the same level, the last one wins, so re-running a level
    and appending replaces its point instead of drawing a zigzag.
    """
    chat: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    embed: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for spec in specs:
        name, sep, file = spec.partition("=")
        file, _, wanted = (file if sep else name).partition("@")
        path = Path(file)
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        if wanted:
            rows = [r for r in rows if r.get("setup") in wanted.split("|")]
        for row in rows:
            label = name if sep else (row.get("setup") or path.stem)
            if row.get("mode") == "embeddings":
                embed[f"{label} (batch {row.get('batch', 1)})"][row["concurrency"]] = row
            else:
                chat[label][row["concurrency"]] = row
    return (
        {k: [v[c] for c in sorted(v)] for k, v in chat.items()},
        {k: [v[c] for c in sorted(v)] for k, v in embed.items()},
    )


def _axes(plt: Any, title: str, ylabel: str, levels: list[int]) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.set_title(title)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel(ylabel)
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _levels(series: Series) -> list[int]:
    return sorted({r["concurrency"] for rows in series.values() for r in rows})


def plot_chat(plt: Any, chat: Series, out_dir: Path, title: str) -> list[Path]:
    """Draw throughput and TTFT charts for the chat series; return the files written."""
    levels = _levels(chat)
    fig, ax = _axes(plt, f"{title}: aggregate decode throughput", "tokens / s", levels)
    for name, rows in chat.items():
        xs = [r["concurrency"] for r in rows]
        ax.plot(xs, [r["aggregate_tok_s"] for r in rows], marker="o", label=name)
    ax.legend()
    tput = out_dir / "chat-throughput.png"
    fig.tight_layout()
    fig.savefig(tput)
    plt.close(fig)

    fig, ax = _axes(plt, f"{title}: time to first token", "ms (p50 solid, p95 dashed)", levels)
    for name, rows in chat.items():
        xs = [r["concurrency"] for r in rows]
        (line,) = ax.plot(xs, [r["ttft_ms_p50"] for r in rows], marker="o", label=name)
        ax.plot(xs, [r["ttft_ms_p95"] for r in rows], ls="--", color=line.get_color())
    ax.legend()
    ttft = out_dir / "chat-ttft.png"
    fig.tight_layout()
    fig.savefig(ttft)
    plt.close(fig)
    return [tput, ttft]


def plot_embeddings(plt: Any, embed: Series, out_dir: Path, title: str) -> list[Path]:
    """Draw the docs/s chart for the embeddings series; return the files written."""
    fig, ax = _axes(plt, f"{title}: embeddings throughput", "documents / s", _levels(embed))
    for name, rows in embed.items():
        ax.plot(
            [r["concurrency"] for r in rows], [r["docs_s"] for r in rows], marker="o", label=name
        )
    ax.legend()
    path = out_dir / "embeddings-throughput.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return [path]


def main(argv: list[str] | None = None) -> int:
    """Load the series and write the PNGs; exit 2 with a hint when matplotlib is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="NAME=FILE.jsonl or FILE.jsonl")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/plots"))
    parser.add_argument("--title", default="llama.cpp on H100", help="prefix of chart titles")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency, checked with a hint

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("plot: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 2
    chat, embed = load_series(args.results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if chat:
        written += plot_chat(plt, chat, args.out_dir, args.title)
    if embed:
        written += plot_embeddings(plt, embed, args.out_dir, args.title)
    for path in written:
        print(f"plot: wrote {path}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
