"""Prometheus scrape routes of localai-llamacpp: one port (the proxy's), a path per program.

The proxy (LiteLLM) serves its own series at ``/metrics/`` and passes each route below through
to the program that makes the series, with the clients' key required on every one (LiteLLM's
``pass_through_endpoints`` with ``auth: true``; ``require_auth_for_metrics_endpoint`` for its
own). Nothing else is published: the engines and the GPU exporter listen on the container's
loopback (or, on fleet nodes, behind the engines' key).

Used by litellm_config (litellm.yaml's pass_through_endpoints) and stack_service (the
Prometheus file_sd targets file), so both name the same paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
PROXY_PATH = "/metrics/"
GPU_PATH = "/gpus/metrics"
BALANCER_PATH = "/balancer/metrics"


def engine_metrics_path(engine: Mapping[str, Any]) -> str:
    """The scrape path of one engine of the plan.

    /engines/<program>/metrics for an engine of this host, /nodes/<host>/engines/<program>/metrics
    for a fleet node's (program names repeat across nodes). Raises AnsibleFilterError for an
    engine without program or host.
    """
    try:
        program, host = str(engine["program"]), str(engine["host"])
    except (KeyError, TypeError) as err:
        raise AnsibleFilterError(f"an engine of the plan lacks {err}: {engine!r}") from err
    if host in LOOPBACK:
        return f"/engines/{program}/metrics"
    return f"/nodes/{host}/engines/{program}/metrics"


def metrics_routes(
    engines: Sequence[Mapping[str, Any]],
    gpu_metrics_url: str = "",
    balancer_metrics_url: str = "",
) -> list[dict[str, Any]]:
    """Every route the proxy passes through to a program's /metrics, with its Prometheus labels.

    engines: the engine plan as litellm_config_engines holds it (program, kind, alias, host,
    port; the engine_plan filter). gpu_metrics_url: the GPU exporter's URL on the
    container's loopback, "" for none (CPU hosts). balancer_metrics_url: HAProxy's
    prometheus-exporter (sessions, queue and state per engine), "" for none.
    Returns [{"path", "target", "remote", "labels": {"program", ...}}]; remote is true for a
    fleet node's engine (it needs the engines' key). Raises AnsibleFilterError when two engines
    would share a path.
    """
    routes = []
    for engine in engines:
        path = engine_metrics_path(engine)
        routes.append(
            {
                "path": path,
                "target": f"http://{engine['host']}:{int(engine['port'])}/metrics",
                "remote": str(engine["host"]) not in LOOPBACK,
                "labels": {
                    "program": str(engine["program"]),
                    "kind": str(engine.get("kind", "")),
                    "alias": str(engine.get("alias", "")),
                    "engine_host": str(engine["host"]),
                },
            }
        )
    # The container's other programs with series, each on its loopback ("" = not on this host).
    for path, url, program in (
        (GPU_PATH, gpu_metrics_url, "gpu-metrics"),
        (BALANCER_PATH, balancer_metrics_url, "balancer"),
    ):
        if url:
            routes.append(
                {"path": path, "target": url, "remote": False, "labels": {"program": program}}
            )
    paths = [route["path"] for route in routes]
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise AnsibleFilterError(f"two engines share the metrics path(s) {duplicates}")
    return routes


def scrape_targets(routes: Sequence[Mapping[str, Any]], address: str) -> list[dict[str, Any]]:
    """Prometheus file_sd target groups for the proxy and every route, all at one address.

    address: host:port Prometheus reaches the proxy at (e.g. gpu1.example:28000). Each group
    sets __metrics_path__ and a `program` label (litellm for the proxy's own series); the key
    goes in the scrape job's `authorization` (see observability/prometheus.yml).
    """
    proxy = {"__metrics_path__": PROXY_PATH, "program": "litellm"}
    groups = [{"targets": [address], "labels": proxy}]
    for route in routes:
        groups.append(
            {
                "targets": [address],
                "labels": {"__metrics_path__": route["path"], **route["labels"]},
            }
        )
    return groups


class FilterModule:
    """metrics_routes, scrape_targets."""

    def filters(self) -> dict[str, Any]:
        return {
            "metrics_routes": metrics_routes,
            "scrape_targets": scrape_targets,
        }
