"""The load balancer between the proxy and the engines: one HAProxy frontend per alias.

LiteLLM picks a deployment per request at random, each worker on its own; HAProxy's
``balance leastconn`` sends each request to the engine with the fewest requests in flight,
counted over every LiteLLM worker, takes an engine out when its /health check fails and puts it
back when it passes, and resends a request an engine refused (bench/results/
2026-12-03-balancer-prototype/NOTES.md measured it against LiteLLM's strategies). So LiteLLM
gets one deployment per alias, at the alias's frontend on the container's loopback, and the
frontend's backend lists every engine of the alias: the GPU replicas of one host, the CPU
replicas, and on a fleet gateway every node's engines.

Used by litellm_config (litellm.yaml's deployments) and stack_service (haproxy.cfg), so both
name the same ports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# HAProxy's proxy and server names: letters, digits, '-', '_', '.', ':' (configuration.txt,
# section 4 "Proxies").
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def _name(text: str) -> str:
    return _NAME_UNSAFE.sub("_", text)


def server_name(engine: Mapping[str, Any]) -> str:
    """HAProxy's name of an engine: its program on this host, <host>-<program> on a fleet node.

    Program names repeat across nodes, so a node's engine carries the node's address. The name
    is what haproxy.log and the balancer's series (`server` label) show.
    """
    program, host = str(engine["program"]), str(engine["host"])
    return _name(program if host in LOOPBACK else f"{host}-{program}")


def balancer_plan(
    engines: Sequence[Mapping[str, Any]],
    port_base: int = 8300,
    var_name: str = "localai_balancer_port_base",
) -> list[dict[str, Any]]:
    """One balanced frontend per alias, in the order the aliases first appear.

    engines: the engine plan (engine_plan), on a fleet gateway every node's: dicts with
    program, kind, model, alias, host, port, and parallel, prompt_tokens, max_tokens where known.
    port_base: the first frontend's port on the container's loopback; alias i listens on
    port_base + i.
    Returns [{"alias", "name", "kind", "model", "host", "port", "prompt_tokens", "max_tokens",
    "engine", "tokenizer_file", "servers": [{"name", "host", "port", "parallel"}]}]: host and
    port are the frontend's (127.0.0.1), name the HAProxy frontend and backend name;
    prompt_tokens and max_tokens are the smallest of the alias's engines (every engine can serve
    what the alias promises); engine and tokenizer_file are its engines' (one engine per alias).
    Raises AnsibleFilterError, naming var_name, when a frontend port is a port an engine of this
    host uses, and when two aliases or two engines of an alias get the same HAProxy name.
    """
    frontends: dict[str, dict[str, Any]] = {}
    for engine in engines:
        try:
            alias = str(engine["alias"])
            server = {
                "name": server_name(engine),
                "host": str(engine["host"]),
                "port": int(engine["port"]),
                "parallel": engine.get("parallel"),
            }
            kind, model = str(engine["kind"]), str(engine["model"])
        except (KeyError, TypeError, ValueError) as err:
            raise AnsibleFilterError(f"an engine of the plan lacks {err}: {engine!r}") from err
        frontend = frontends.get(alias)
        if frontend is None:
            frontend = frontends[alias] = {
                "alias": alias,
                "name": _name(alias),
                "kind": kind,
                "model": model,
                "host": "127.0.0.1",
                "port": int(port_base) + len(frontends),
                "prompt_tokens": engine.get("prompt_tokens"),
                "max_tokens": engine.get("max_tokens"),
                "engine": engine.get("engine", "llama-server"),
                "tokenizer_file": engine.get("tokenizer_file"),
                "servers": [],
            }
        elif frontend["kind"] != kind:
            raise AnsibleFilterError(
                f"alias {alias!r} names a {frontend['kind']} model and a {kind} model; "
                "fix: give each model its own alias"
            )
        elif frontend["engine"] != engine.get("engine", "llama-server"):
            raise AnsibleFilterError(
                f"alias {alias!r} is served by {frontend['engine']} and by "
                f"{engine.get('engine', 'llama-server')} engines, which count tokens and "
                "answer differently; fix: one engine per alias (localai_models' engine)"
            )
        for key in ("prompt_tokens", "max_tokens"):
            values = [v for v in (frontend[key], engine.get(key)) if v is not None]
            frontend[key] = min(int(v) for v in values) if values else None
        if any(s["name"] == server["name"] for s in frontend["servers"]):
            raise AnsibleFilterError(f"two engines of alias {alias!r} are both {server['name']!r}")
        frontend["servers"].append(server)

    names = [f["name"] for f in frontends.values()]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise AnsibleFilterError(
            f"aliases that differ only in characters HAProxy names cannot hold share {clashes}; "
            "fix: rename one of the aliases"
        )
    local_ports = {int(e["port"]) for e in engines if str(e["host"]) in LOOPBACK}
    taken = sorted(local_ports & {f["port"] for f in frontends.values()})
    if taken:
        raise AnsibleFilterError(
            f"{var_name}={port_base} puts a balancer frontend on port(s) {taken}, which an engine "
            f"uses; fix: set {var_name} above the engines' ports"
        )
    return list(frontends.values())


class FilterModule:
    """balancer_plan."""

    def filters(self) -> dict[str, Any]:
        return {"balancer_plan": balancer_plan}
