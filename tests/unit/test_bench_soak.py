"""bench/soak.py: status counting, process names, RSS parsing and the growth findings."""

from __future__ import annotations

from project import load

soak = load("bench_soak", "bench/soak.py")
RequestResult = soak.RequestResult

RSS_BEFORE = """\
1 1320 /usr/bin/tini -- /opt/localai/venv/bin/supervisord -c /etc/localai/supervisord.conf
14 180000 /opt/localai/bin/llama-server --model /models/chat.gguf --alias SmolLM2 --port 8090
58 360000 /opt/localai/venv/bin/python3 -c from multiprocessing.spawn import spawn_main; x
97 29752 /opt/localai/venv/bin/python3 /opt/localai/venv/bin/litellm --config /config/l.yaml
junk line
"""


def test_status_of_reads_the_http_status_of_failures():
    assert soak.status_of(RequestResult(ok=True)) == "200"
    assert soak.status_of(RequestResult(ok=False, error="HTTP 503: busy")) == "503"
    assert soak.status_of(RequestResult(ok=False, error="ConnectionResetError: x")) == "error"


def test_summary_counts_5xx_and_takes_latency_of_successes_only():
    results = [
        ("chat", RequestResult(ok=True, latency=1.0), 0.0),
        ("chat", RequestResult(ok=True, latency=3.0), 0.0),
        ("chat", RequestResult(ok=False, latency=99.0, error="HTTP 500: boom"), 0.0),
        ("embeddings", RequestResult(ok=True, latency=0.1), 0.0),
    ]
    s = soak.summarize(results, 2.0)
    assert s["chat"]["requests"] == 3 and s["chat"]["ok"] == 2
    assert s["chat"]["server_errors_5xx"] == 1
    assert s["chat"]["status"] == {"200": 2, "500": 1}
    assert s["chat"]["latency_ms_p95"] == 3000.0
    assert s["embeddings"]["requests_s"] == 0.5


def test_parse_rss_names_the_stack_s_processes():
    procs = soak.parse_rss(RSS_BEFORE)
    assert procs["14"]["name"] == "llama-server (SmolLM2)"
    assert procs["58"]["name"] == "litellm worker"
    assert procs["97"]["name"] == "litellm"
    assert procs["14"]["rss_mib"] == 175.8
    assert "junk" not in str(procs)


def test_growth_past_both_limits_and_replaced_processes_are_findings():
    before = soak.parse_rss(RSS_BEFORE)
    after = soak.parse_rss(
        RSS_BEFORE.replace("14 180000", "14 400000")  # +215 MiB, +122 %
        .replace("97 29752", "97 30000")  # a little: fine
        .replace("58 360000", "59 360000")  # the worker was replaced
    )
    rows, findings = soak.compare_rss(before, after, max_growth_mb=128, max_growth_pct=25)
    assert len(rows) == 4
    assert any("llama-server (SmolLM2) (pid 14) grew 214.8 MiB" in f for f in findings)
    assert any("litellm worker (pid 58) is gone" in f for f in findings)
    assert len(findings) == 2


def test_growth_within_either_limit_is_not_a_finding():
    before = soak.parse_rss("5 1000000 /opt/localai/bin/llama-server --alias big")
    after = soak.parse_rss("5 1150000 /opt/localai/bin/llama-server --alias big")  # +146 MiB, 15 %
    assert soak.compare_rss(before, after, 128, 25)[1] == []
