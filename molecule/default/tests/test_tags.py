"""`site.yml --tags models` on the serving host: swap what is served without touching the image.

The first run gives the chat entry another slot count and context (its engine's command line
changes): the service must restart with the new engine, on the same image, with no task of the
roles that install packages, Docker or the image. The second asks for a model list the image
cannot serve (no Infinity entry: the image would lose Infinity's venv): it must stop before the
models role, with nothing restarted. A last run with the scenario's own models puts it back.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from scenario import CONTAINER, PROJECT
from test_bad_input import chat_serves, recap_of, run_converge
from test_dry_run import started_at

ENGINES = "/etc/localai-llamacpp/engines.json"
PROGRAMS = "/etc/localai-llamacpp/supervisor/programs.conf"
# The chat entry with three slots of 1,024 tokens (the scenario's: two of 1,024).
MORE_SLOTS = (
    "{{ [__test_models[0] | combine({'parallel': 3, 'ctx_size': 3072})] + __test_models[1:]"
    " + __test_infinity_models }}"
)
# The task files `--tags models` must not run (the checks of their roles still run).
UNTOUCHED = {
    "bundle": ["host_repository.yml"],
    "nvidia_toolkit": ["driver.yml", "install.yml", "configure.yml"],
    "docker_engine": ["install_distribution.yml", "install_docker.yml", "run.yml"],
    "stack_image": ["install.yml"],
}


def task_names(tasks: list[dict]) -> list[str]:
    """The names of a task list's tasks, those inside blocks included."""
    names = []
    for task in tasks:
        names += [task["name"]] if "name" in task and "block" not in task else []
        for section in ("block", "rescue", "always"):
            names += task_names(task.get(section, []))
    return names


def untouched_tasks() -> set[str]:
    """`role : task` of every task in the UNTOUCHED files, as the playbook output names them."""
    names = set()
    for role, files in UNTOUCHED.items():
        for file in files:
            tasks = yaml.safe_load((PROJECT / "roles" / role / "tasks" / file).read_text())
            names |= {f"{role} : {name}" for name in task_names(tasks)}
    return names


def image_id(host) -> str:
    """The image the stack's container runs, by ID."""
    return host.check_output(f"docker inspect -f '{{{{.Image}}}}' {CONTAINER}")


def chat_engine(host) -> dict:
    """The deployed chat engine's entry of engines.json."""
    engines = json.loads(host.file(ENGINES).content_string)["engines"]
    return next(engine for engine in engines if engine["kind"] == "chat")


def live_slots(host, port: int) -> int:
    """total_slots of the chat llama-server as it answers inside the container (/props)."""
    script = (
        "import json, urllib.request; "
        f"print(json.load(urllib.request.urlopen('http://127.0.0.1:{port}/props'))['total_slots'])"
    )
    python = "/opt/localai/venv/bin/python"
    return int(host.check_output(f'docker exec {CONTAINER} {python} -c "{script}"'))


def tasks_of(output: str) -> list[str]:
    """The `role : task` names the run started, in order."""
    return re.findall(r"^TASK \[([^\]]+)\]", output, re.MULTILINE)


@pytest.fixture(scope="module")
def before(host):
    status, body = chat_serves()
    assert status == 200, f"the stack does not serve before the runs: {status} {body}"
    engine = chat_engine(host)
    assert live_slots(host, engine["port"]) == engine["parallel"] == 2
    programs = host.file(PROGRAMS).content_string
    yield {"image": image_id(host), "programs": programs}
    result = run_converge("--tags", "models", timeout=900)
    tail = result.stdout[-4000:]
    assert result.returncode == 0, f"the run back to the scenario's models failed:\n{tail}"
    assert host.file(PROGRAMS).content_string == programs
    assert live_slots(host, chat_engine(host)["port"]) == 2


def test_tags_models_swaps_the_engine_and_keeps_the_image(host, before):
    started = started_at(host)
    more_slots = json.dumps({"localai_models": MORE_SLOTS})
    result = run_converge("--tags", "models", "-e", more_slots, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"--tags models failed:\n{output[-4000:]}"
    assert recap_of(result.stdout)["changed"] >= 1
    tasks = tasks_of(result.stdout)
    assert any(task.startswith("models : ") for task in tasks), tasks
    forbidden = untouched_tasks()
    assert len(forbidden) > 20, forbidden
    ran = [task for task in tasks if task in forbidden]
    assert not ran, f"--tags models ran tasks that install or build: {ran}"
    assert image_id(host) == before["image"], "--tags models changed the image"
    assert started_at(host) != started, "the service was not restarted with the new engine"
    engine = chat_engine(host)
    assert (engine["parallel"], engine["ctx_size"]) == (3, 3072)
    assert live_slots(host, engine["port"]) == 3, "the running engine has the old slot count"
    status, body = chat_serves()
    assert status == 200, f"the stack does not serve after --tags models: {status} {body}"


@pytest.fixture
def only_the_serving_image(host):
    """Untag every other stack image of the target's Docker engine for the test, then put back.

    The refusal is right only while the image the other model list needs is not built; an engine
    that has served other lists (the demo lends this scenario's volume) may hold it, and then
    going on is right. Untagging keeps the layers: the tags come back as they were.
    """
    serving = image_id(host)
    listed = host.check_output(
        "docker images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' localai-llamacpp"
    )
    held = [line.split()[0] for line in listed.splitlines() if line.split()[1] != serving]
    for number, tag in enumerate(held):
        host.run_expect([0], f"docker tag {tag} localai-llamacpp-held:{number}")
        host.run_expect([0], f"docker rmi {tag}")
    yield
    for number, tag in enumerate(held):
        host.run_expect([0], f"docker tag localai-llamacpp-held:{number} {tag}")
        host.run_expect([0], f"docker rmi localai-llamacpp-held:{number}")


def test_tags_models_refuses_models_the_image_cannot_serve(host, before, only_the_serving_image):
    started = started_at(host)
    programs = host.file(PROGRAMS).content_string
    without_infinity = json.dumps({"localai_models": "{{ __test_models }}"})
    result = run_converge("--tags", "models", "-e", without_infinity, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"--tags models went on without its image:\n{output[-4000:]}"
    failure = re.search(r"^fatal: \[localai-default\]: FAILED! => (.*)$", output, re.MULTILINE)
    assert failure, output[-4000:]
    message = re.sub(r"\s+", " ", failure.group(1))
    assert "which is not built, and this run builds none (--tags models)" in message, message
    assert "Fix: run site.yml without --tags, or with --tags stack_image,models" in message, message
    assert not any(task.startswith("models : Place") for task in tasks_of(result.stdout))
    assert host.file(PROGRAMS).content_string == programs, "programs.conf was rewritten"
    assert started_at(host) == started, "the service was restarted"
    status, body = chat_serves()
    assert status == 200, f"the stack stopped serving: {status} {body}"
