"""Fleet (issue 6): two engine nodes and a gateway; the gateway balances, survives a node, heals.

The tests talk to the gateway's published port from the controller, and to the nodes' engines
on the container network (the controller reaches it: it is a Docker bridge on this host).
Which engine served is read from each llama-server's own /metrics (tokens_predicted_total), and
from the gateway's balancer (/balancer/metrics: requests HAProxy sent to each engine).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

GATEWAY = "http://127.0.0.1:28200/v1"
# The keys the scenario deploys, read from the vars its hosts link to (one place to change them).
MOLECULE = Path(__file__).parents[2]
CLIENT_KEY = yaml.safe_load((MOLECULE / "shared/vars/airgap-test.yml").read_text())[
    "litellm_config_master_key"
]
ENGINE_KEY = yaml.safe_load((MOLECULE / "fleet/vars/fleet-test.yml").read_text())[
    "localai_fleet_engine_api_key"
]
NODES = {"localai-fleet-node1": (8090, 8091), "localai-fleet-node2": (8090,)}
GATEWAY_HOST = "localai-fleet-gateway"


def docker(*args: str) -> str:
    """Run the controller's docker CLI and return stdout."""
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def node_ip(name: str) -> str:
    """The node's address on the fleet network (what its engines are published on)."""
    out = docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", name)
    return json.loads(out)["localai-fleet"]["IPAddress"]


def predicted(name: str, port: int) -> float:
    """tokens_predicted_total of one engine (needs the engine key)."""
    reply = httpx.get(
        f"http://{node_ip(name)}:{port}/metrics",
        headers={"Authorization": f"Bearer {ENGINE_KEY}"},
        timeout=10,
    )
    reply.raise_for_status()
    for line in reply.text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total"):
            return float(line.split()[-1])
    raise AssertionError(f"no tokens_predicted_total in {name}:{port}/metrics")


def snapshot() -> dict[tuple[str, int], float]:
    """tokens_predicted_total of every engine of the fleet."""
    return {(n, p): predicted(n, p) for n, ports in NODES.items() for p in ports}


def chat(client: httpx.Client) -> httpx.Response:
    """One small chat through the gateway."""
    return client.post(
        f"{GATEWAY}/chat/completions",
        json={
            "model": "gpt-3.5-turbo",
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4,
        },
    )


@pytest.fixture(scope="module")
def client() -> httpx.Client:
    with httpx.Client(headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=120) as c:
        yield c


def wait_healthy(name: str, seconds: float = 300) -> None:
    """Wait until every engine of a node answers /health (public endpoint) with 200."""
    deadline = time.monotonic() + seconds
    for port in NODES[name]:
        while True:
            try:
                if httpx.get(f"http://{node_ip(name)}:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{name}:{port} not healthy in {seconds}s"
            time.sleep(2)


def test_gateway_balances_over_both_nodes_and_both_replicas(client):
    before = snapshot()
    for _ in range(30):
        reply = chat(client)
        assert reply.status_code == 200, reply.text
    after = snapshot()
    served = {engine for engine in before if after[engine] > before[engine]}
    assert {n for n, _ in served} == set(NODES), f"served: {sorted(served)}"
    # CPU replicas layout: node 1 runs two chat engines, and both served.
    assert {p for n, p in served if n == "localai-fleet-node1"} == {8090, 8091}


def test_embeddings_through_the_gateway(client):
    reply = client.post(
        f"{GATEWAY}/embeddings", json={"model": "text-embedding-ada-002", "input": "hello"}
    )
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["data"][0]["embedding"]) == 384


def test_engines_need_the_key_and_it_is_not_on_a_command_line():
    ip = node_ip("localai-fleet-node2")
    assert httpx.get(f"http://{ip}:8090/v1/models", timeout=10).status_code == 401
    ok = httpx.get(
        f"http://{ip}:8090/v1/models",
        headers={"Authorization": f"Bearer {ENGINE_KEY}"},
        timeout=10,
    )
    assert ok.status_code == 200
    processes = docker("exec", "localai-fleet-node2", "ps", "-eo", "args")
    assert "llama-server" in processes and ENGINE_KEY not in processes


def test_only_the_gateway_publishes_28000():
    gateway = docker("exec", GATEWAY_HOST, "ss", "-Hltn")
    assert ":28000 " in gateway
    assert not any(f":{p} " in gateway for p in (8080, 8090, 8091))
    for name in NODES:
        listening = docker("exec", name, "ss", "-Hltn")
        assert ":28000 " not in listening
        assert f"{node_ip(name)}:8090 " in listening


def test_a_stopped_node_costs_no_request_and_comes_back(client):
    docker("exec", "localai-fleet-node2", "systemctl", "stop", "localai-llamacpp")
    try:
        failures = [r.text for r in (chat(client) for _ in range(100)) if r.status_code != 200]
        assert failures == [], f"{len(failures)} of 100 failed: {failures[:3]}"
    finally:
        docker("exec", "localai-fleet-node2", "systemctl", "start", "localai-llamacpp")
    # Streams run through the gateway while node 2 comes back: its return cuts none.
    stop, cut, done = threading.Event(), [], []

    def streams() -> None:
        while not stop.is_set():
            with client.stream(
                "POST",
                f"{GATEWAY}/chat/completions",
                json={
                    "model": "gpt-3.5-turbo",
                    "messages": [{"role": "user", "content": "Tell a story."}],
                    "max_tokens": 64,
                    "stream": True,
                },
            ) as reply:
                lines = [line for line in reply.iter_lines() if line]
            (done if reply.status_code == 200 and lines[-1:] == ["data: [DONE]"] else cut).append(
                (reply.status_code, lines[-1:])
            )

    streamer = threading.Thread(target=streams)
    streamer.start()
    try:
        wait_healthy("localai-fleet-node2")
        before = predicted("localai-fleet-node2", 8090)
        deadline = time.monotonic() + 120
        while predicted("localai-fleet-node2", 8090) <= before:
            assert time.monotonic() < deadline, "node 2 got no traffic within 120 s of its restart"
            assert chat(client).status_code == 200
            time.sleep(0.5)
    finally:
        stop.set()
        streamer.join(120)
    assert cut == [] and done, f"{len(cut)} streams cut, {len(done)} whole: {cut[:3]}"


def balanced(client: httpx.Client) -> dict[tuple[str, int], float]:
    """Requests the gateway's balancer sent to each chat engine (haproxy_server_sessions_total)."""
    reply = client.get(GATEWAY.removesuffix("/v1") + "/balancer/metrics")
    reply.raise_for_status()
    by_server = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^haproxy_server_sessions_total\{proxy="gpt-3.5-turbo",server="([^"]+)"\} (\S+)$',
            reply.text,
            re.M,
        )
    }
    return {engine: by_server[server] for engine, server in server_names().items()}


def server_names() -> dict[tuple[str, int], str]:
    """The gateway balancer's name of each chat engine: <node address>-<program>."""
    names = {}
    for name, ports in NODES.items():
        programs = [f"llamacpp-chat-{i}" for i in range(len(ports))]
        if len(ports) == 1:
            programs = ["llamacpp-chat"]
        for port, program in zip(ports, programs, strict=True):
            names[(name, port)] = f"{node_ip(name)}-{program}"
    return names


def test_a_busy_engine_gets_fewer_requests_than_idle_ones(client):
    """Node 2's engine has both its slots taken by clients that call it directly (the gateway
    cannot see them): the gateway's requests wait there, so leastconn sends it fewer."""
    busy = ("localai-fleet-node2", 8090)
    stop = threading.Event()

    def occupy() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {ENGINE_KEY}"}, timeout=300) as c:
            while not stop.is_set():
                c.post(
                    f"http://{node_ip(busy[0])}:{busy[1]}/v1/chat/completions",
                    json={
                        "messages": [{"role": "user", "content": "Write a long story."}],
                        "max_tokens": 256,
                        "ignore_eos": True,
                    },
                )

    before = balanced(client)
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        occupiers = [pool.submit(occupy) for _ in range(2)]
        time.sleep(2)
        try:
            replies = list(pool.map(lambda _: chat(client), range(36)))
        finally:
            stop.set()
        for occupier in occupiers:
            occupier.result()
    assert [r.status_code for r in replies] == [200] * 36
    after = balanced(client)
    sent = {engine: after[engine] - before[engine] for engine in before}
    idle = [n for engine, n in sent.items() if engine != busy]
    assert sum(sent.values()) == 36, sent
    assert sent[busy] < min(idle), sent


def test_the_gateways_status_says_how_each_nodes_engine_is():
    """playbooks/status.yml on the gateway: its balancer's view of every node's chat engine."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    assert inventory, "run under `molecule verify` (MOLECULE_INVENTORY_FILE is not set)"
    project = MOLECULE.parent
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(project / "roles"),
        "ANSIBLE_COLLECTIONS_PATH": str(project / "collections"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", inventory,
         str(project / "playbooks/status.yml"), "--limit", GATEWAY_HOST],
        env=env, cwd=project, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    tasks = json.loads(result.stdout)["plays"][0]["tasks"]
    assert tasks[-1]["task"]["name"] == "Show the status"
    lines = tasks[-1]["hosts"][GATEWAY_HOST]["msg"]
    assert "balancer RUNNING: one frontend per alias, least connections" in lines
    for server in server_names().values():
        line = next((x for x in lines if x.startswith(f"balancer gpt-3.5-turbo -> {server}: ")), "")
        assert line.startswith(f"balancer gpt-3.5-turbo -> {server}: UP, in flight "), lines
