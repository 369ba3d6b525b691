"""Prometheus through the published port: every target behind the key, scraped by a real Prometheus.

The targets are the ones site.yml wrote to prometheus-targets.json (file_sd groups); a real
Prometheus (Debian's package, started here) scrapes them with the key from a credentials file,
and every query of the Grafana dashboard in observability/ must return series from it. The GPU
panels' series come from GPU hosts only (checked on the GPU run,
bench/results/2026-12-03-h200-metrics/NOTES.md).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import openai
import pytest
from scenario import API_KEY, BASE_URL, PROJECT

sys.path.insert(0, str(PROJECT / "observability"))
from dashboard import GPU_SERIES, metric_names, queries

ROOT = BASE_URL.removesuffix("/v1")
PUBLISHED = ROOT.removeprefix("http://")
TARGETS_FILE = "/etc/localai-llamacpp/prometheus-targets.json"


def get(path: str, key: str | None = API_KEY) -> tuple[int, str]:
    """GET a path of the published port: (status, body)."""
    request = urllib.request.Request(ROOT + path)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def series(text: str) -> dict[str, set[str]]:
    """Prometheus text exposition -> {sample name: label names seen on it}."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*?)\})?\s", line)
        assert match, f"not a sample line: {line!r}"
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(3) or ""))
        found.setdefault(match.group(1), set()).update(labels)
    return found


def traffic() -> None:
    """One streamed chat, one embedding and one refused request through the proxy."""
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=120)
    list(
        client.chat.completions.create(
            model="gpt-3.5-turbo",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            stream=True,
        )
    )
    client.embeddings.create(model="text-embedding-ada-002", input="query: metrics")
    with pytest.raises(openai.BadRequestError):  # a failed request, for the failure series
        client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=7)


@pytest.fixture(scope="module")
def groups(host) -> list[dict]:
    """The target groups site.yml wrote (after some traffic, so every series exists)."""
    traffic()
    target_file = host.file(TARGETS_FILE)
    assert target_file.mode == 0o644  # no secret in it
    return json.loads(target_file.content_string)


def test_targets_name_the_proxy_and_every_engine(groups):
    paths = {g["labels"]["__metrics_path__"]: g["labels"] for g in groups}
    assert set(paths) == {
        "/metrics/",
        "/engines/llamacpp-chat/metrics",
        "/engines/llamacpp-embeddings/metrics",
        "/engines/infinity-embeddings/metrics",
        "/balancer/metrics",
    }  # a CPU host: no /gpus/metrics
    assert paths["/engines/llamacpp-chat/metrics"]["alias"] == "gpt-3.5-turbo"
    assert paths["/engines/llamacpp-embeddings/metrics"]["kind"] == "embedding"
    # The address Prometheus reaches the proxy at: the inventory name and the stack's port.
    assert {t for g in groups for t in g["targets"]} == {"localai-default:28000"}


@pytest.mark.parametrize("key", [None, "sk-wrong-key-0123456789"])
def test_every_target_refuses_a_missing_or_wrong_key(groups, key):
    for group in groups:
        status, _ = get(group["labels"]["__metrics_path__"], key=key)
        assert status == 401, group["labels"]


def test_every_target_answers_with_its_series(groups):
    found = {
        g["labels"]["program"]: series(get(g["labels"]["__metrics_path__"])[1]) for g in groups
    }
    assert "litellm_proxy_total_requests_metric_total" in found["litellm"]
    assert "requested_model" in found["litellm"]["litellm_proxy_total_requests_metric_total"]
    assert "litellm_llm_api_time_to_first_token_metric_bucket" in found["litellm"]
    # The key's hash is no label (LiteLLM would add hashed_api_key to most series).
    assert not any("hashed_api_key" in labels for labels in found["litellm"].values())
    for engine in ("llamacpp-chat", "llamacpp-embeddings"):
        assert {"llamacpp:prompt_tokens_total", "llamacpp:requests_deferred"} <= set(found[engine])
    # Infinity's: its HTTP server's requests and their durations.
    assert {"http_requests_total", "http_request_duration_seconds_bucket"} <= set(
        found["infinity-embeddings"]
    )
    # HAProxy's: requests in flight and served per engine, per alias.
    assert {"haproxy_server_current_sessions", "haproxy_server_sessions_total"} <= set(
        found["balancer"]
    )
    assert {"proxy", "server"} <= found["balancer"]["haproxy_server_current_sessions"]


@pytest.fixture(scope="module")
def prometheus(groups, tmp_path_factory) -> str:
    """A real Prometheus scraping the written targets every second; its HTTP API's URL."""
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is missing: `make test` installs Debian's prometheus package"
    work = tmp_path_factory.mktemp("prometheus")
    (work / "key").write_text(API_KEY)
    (work / "key").chmod(0o400)
    (work / "sd").mkdir()
    # The targets as written, but at the port molecule publishes the target's 28000 on.
    local = [dict(g, targets=[PUBLISHED]) for g in groups]
    (work / "sd" / "localai-default.json").write_text(json.dumps(local))
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: localai-llamacpp\n"
        f"    authorization: {{type: Bearer, credentials_file: {work / 'key'}}}\n"
        f"    file_sd_configs: [{{files: ['{work / 'sd'}/*.json']}}]\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                targets = query_api(url, "targets")["activeTargets"]
                if len(targets) == len(groups) and all(t["health"] == "up" for t in targets):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(1)
        else:
            tail = Path(log.name).read_text()[-2000:]
            pytest.fail(f"Prometheus's targets did not come up: {tail}")
        traffic()  # inside the queries' 30 s windows
        time.sleep(5)  # a few scrapes, so rate() has two points
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def query_api(url: str, endpoint: str, **params: str) -> dict:
    """Prometheus's HTTP API: the `data` of an answer."""
    address = f"{url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(address, timeout=10) as reply:
        answer = json.load(reply)
    assert answer["status"] == "success", answer
    return answer["data"]


def test_every_dashboard_query_returns_series_from_the_scrape(prometheus):
    for title, expr in queries():
        names = metric_names(expr)
        if all(GPU_SERIES.match(n) for n in names):
            continue  # GPU hosts only
        assert names, (title, expr)
        result = query_api(prometheus, "query", query=expr)["result"]
        assert result, f"{title}: no series for {expr}"
