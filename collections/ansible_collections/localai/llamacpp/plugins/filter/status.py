"""Filter for playbooks/status.yml: what a host serves, as lines an operator reads."""

from __future__ import annotations

import json
import re
from typing import Any

PROGRAM_RE = re.compile(r"^(\S+)\s+(\S+)")
GPU_RE = re.compile(r"^\s*(\d+),\s*(.+?),\s*(\d+),\s*(\d+)\s*$")


def _head(deployed: dict[str, Any], unit_state: str, container: dict[str, Any] | None) -> str:
    """The unit, the deployed image and the container running it."""
    head = f"localai-llamacpp.service {unit_state or 'unknown'}; image {deployed.get('image')}"
    if not container:
        return head + "; no container"
    state = container.get("State", {})
    head += f" (container {state.get('Status')} since {str(state.get('StartedAt'))[:19]})"
    running_image = container.get("Config", {}).get("Image")
    if running_image != deployed.get("image"):
        head += f"; the container runs {running_image}, not the deployed image"
    return head


def _engine_line(engine: dict[str, Any], state: str, gauges: list[int] | None) -> str:
    """One engine: state, alias and model, slots, context, GPU, requests in flight.

    An Infinity engine has batches and an input limit instead of slots and a context, and no
    request gauges of its own (the balancer's lines show its requests in flight).
    """
    infinity = engine.get("engine") == "infinity"
    sizes = (
        f"Infinity, batches of {engine['parallel']}, inputs up to {engine['ctx_size']} tokens"
        if infinity
        else f"{engine['parallel']} slots, ctx {engine['ctx_size']}"
    )
    line = f"{engine['program']} {state}: {engine['alias']} = {engine['model']}, {sizes}"
    if engine.get("gpu") is not None:
        line += f", GPU {engine['gpu']}"
    if infinity:
        return line
    if gauges:
        return line + f", in flight {gauges[0]}, waiting {gauges[1]}"
    return line + f", in flight unknown (no answer on port {engine['port']})"


def _json(value: Any, empty: Any) -> Any:
    """A command's JSON output (or the value itself); empty when it is not usable."""
    if isinstance(value, str):
        try:  # the container's answer, or nothing usable (no container, no Python in it)
            return json.loads(value) if value else empty
        except ValueError:
            return empty
    return value or empty


def _balancer_lines(state: str, rows: list[dict[str, Any]]) -> list[str]:
    """The balancer program, then one line per engine of each alias as HAProxy sees it."""
    lines = [f"balancer {state}: one frontend per alias, least connections"]
    for row in rows:
        lines.append(
            f"balancer {row['alias']} -> {row['engine']}: {row['status']}, in flight "
            f"{row['in_flight']}, queued {row['queued']}, served {row['served']}"
        )
    return lines


def status_lines(deployed: dict[str, Any], observed: dict[str, Any]) -> list[str]:
    """The status of one host, one line per fact.

    deployed   engines.json as stack_service writes it: image, port, run_proxy, gpu_mode,
               engines (program, kind, model, alias, port, gpu, parallel, ctx_size)
    observed   what the host answered:
               unit       `systemctl is-active localai-llamacpp` (active, inactive, failed, ...)
               container  `docker inspect` of the container, its one object (None when there
                          is none)
               programs   `supervisorctl status` lines inside the container ("name STATE ...")
               load       {engine port: [requests_processing, requests_deferred] or None} from
                          the engines' /metrics (JSON text or a dict)
               balancer   [{alias, engine, status, in_flight, queued, served}] from
                          HAProxy's `show stat` (JSON text or a list; hosts with the proxy)
               gpus       nvidia-smi --query-gpu=index,name,memory.used,memory.total (csv, MiB)

    Returns lines such as "llamacpp-chat RUNNING: gpt-3.5-turbo = SmolLM2-135M-Instruct,
    2 slots, ctx 2048, in flight 0, waiting 0".
    """
    states = {}
    for line in observed.get("programs") or []:
        match = PROGRAM_RE.match(line)
        if match:
            states[match.group(1)] = match.group(2)
    load = _json(observed.get("load"), {})
    lines = [_head(deployed, observed.get("unit", ""), observed.get("container"))]
    if deployed.get("run_proxy"):
        lines.append(
            f"litellm {states.get('litellm', 'absent')}: the proxy, port {deployed.get('port')}"
        )
        if "balancer" in states or observed.get("balancer"):
            lines += _balancer_lines(
                states.get("balancer", "absent"), _json(observed.get("balancer"), [])
            )
    for engine in deployed.get("engines", []):
        state = states.get(engine["program"], "absent")
        lines.append(_engine_line(engine, state, load.get(str(engine["port"]))))
    for line in observed.get("gpus") or []:
        match = GPU_RE.match(line)
        if match:
            index, name, used, total = match.groups()
            lines.append(f"GPU {index} ({name}): {used} of {total} MiB in use")
    return lines


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {"status_lines": status_lines}
