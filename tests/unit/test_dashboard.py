"""The Grafana dashboard: it parses, and its queries read the series the programs serve."""

from __future__ import annotations

import json

from project import REPO, load

dashboard = load("dashboard", "observability/dashboard.py")


def test_the_dashboard_parses_with_a_prometheus_data_source_variable():
    board = json.loads((REPO / "observability/grafana-dashboard.json").read_text())
    assert board["uid"] == "localai-llamacpp"
    (variable,) = board["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


def test_the_queries_cover_requests_tokens_latency_queues_and_gpus():
    names = set().union(*(dashboard.metric_names(e) for _, e in dashboard.queries()))
    assert {
        "litellm_proxy_total_requests_metric_total",
        "llamacpp:tokens_predicted_total",
        "litellm_llm_api_time_to_first_token_metric_bucket",
        "llamacpp:requests_deferred",
        "gpu_memory_used_MiB",
        "gpu_utilization_Percentage",
    } <= names


def test_metric_names_leave_functions_labels_and_grouping_out():
    expr = (
        "histogram_quantile(0.95, sum by (le, requested_model) "
        '(rate(litellm_request_total_latency_metric_bucket{requested_model!=""}[30s])))'
    )
    assert dashboard.metric_names(expr) == {"litellm_request_total_latency_metric_bucket"}
    assert dashboard.metric_names("sum by (program) (llamacpp:requests_deferred)") == {
        "llamacpp:requests_deferred"
    }


def test_exposition_names():
    text = '# HELP x y\n# TYPE x gauge\nx{a="1"} 2\nllamacpp:n_decode_total 3\n'
    assert dashboard.exposition_names(text) == {"x", "llamacpp:n_decode_total"}


def test_the_gpu_panels_read_series_the_gpu_exporter_served_on_an_h200():
    """The GPU run's scrape of /gpus/metrics (bench/results, nvitop-exporter in the container)."""
    served = dashboard.exposition_names(
        (REPO / "bench/results/2026-12-03-h200-metrics/metrics-gpu-metrics.prom").read_text()
    )
    gpu_names = {
        name
        for _, expr in dashboard.queries()
        for name in dashboard.metric_names(expr)
        if dashboard.GPU_SERIES.match(name)
    }
    assert gpu_names and gpu_names <= served
