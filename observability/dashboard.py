"""The Grafana dashboard's queries and the Prometheus series each one reads.

Used by the tests (molecule's scrape of a CPU host, the GPU end-to-end checks) to hold every
query of grafana-dashboard.json to the series the programs really serve. Standard library only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).with_name("grafana-dashboard.json")
GPU_SERIES = re.compile(r"^gpu_")  # nvitop-exporter's, GPU hosts only


def queries(path: Path = DASHBOARD, rate_interval: str = "30s") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query, with $__rate_interval replaced by rate_interval."""
    board = json.loads(path.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", rate_interval))
        for panel in board["panels"]
        for target in panel["targets"]
    ]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: label matchers, ranges, strings, grouping
    clauses and every identifier followed by "(" (functions, aggregations) left out."""
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", stripped)
    return {
        word.group()
        for word in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped)
        if not stripped[word.end() :].lstrip().startswith("(")
    }


def exposition_names(text: str) -> set[str]:
    """The sample names of a Prometheus text exposition (/metrics body)."""
    return {
        match.group(1)
        for line in text.splitlines()
        if line and not line.startswith("#")
        for match in [re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)]
        if match
    }
