"""The README's "Try it" as a user runs it: `make demo`, the curl lines between the README's
`demo-curl` markers with the key `make demo` printed filled in where the README says (`export
KEY=...`), then `make demo-down`. Run by `make demo-test` (after the molecule scenarios), which
lends the demo the default scenario's nested Docker volume so nothing compiles again.

The tests run in file order and share one demo: a module fixture brings it up, the last test
takes it down (and the fixture makes sure it is down even when a test before failed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).parents[2]
README = PROJECT / "README.md"
CONTAINER = "localai-demo"
# The demo's own nested Docker volume, removed by `make demo-down`; a lent one is kept.
OWN_VOLUME = "localai-demo-docker"
# The fixture embedding model (all-MiniLM-L6-v2) gives 384 floats per input.
EMBEDDING_WIDTH = 384
# A cold demo compiles llama.cpp (about 13 minutes on 2 cores); with the image at hand it took
# 4-6 minutes on 2 cores.
DEMO_TIMEOUT_S = 3600
JOURNAL = "journalctl --no-pager -n 60 -u docker -u localai-llamacpp"
PLACEHOLDER = re.compile(r"^export KEY=\.\.\..*$", re.MULTILINE)


def readme_block() -> str:
    """The shell block between `<!-- demo-curl:start -->` and `<!-- demo-curl:end -->`, without
    its fences. Fails when the markers or the placeholder line are missing."""
    text = README.read_text()
    match = re.search(
        r"<!-- demo-curl:start -->\n```sh\n(.*?)```\n<!-- demo-curl:end -->", text, re.S
    )
    assert match, "README.md has no ```sh block between the demo-curl markers"
    block = match.group(1)
    assert PLACEHOLDER.search(block), "the README's demo block has no `export KEY=...` line"
    return block


def commands(block: str) -> list[str]:
    """The block's commands as a user pastes them: each starts on an unindented line and takes
    the indented lines after it (continuations, a JSON body); comments and blank lines dropped."""
    found: list[str] = []
    for line in block.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace() and found:
            found[-1] += "\n" + line
        else:
            found.append(line)
    return found


def fill_key(block: str, key: str) -> str:
    """The block as the README tells the user to run it: the printed key in place of `...`."""
    return PLACEHOLDER.sub(f"export KEY={key}", block)


def make(target: str) -> subprocess.CompletedProcess[str]:
    """Run `make <target>` from the repository root, as the README says, with its output kept."""
    return subprocess.run(
        ["make", target],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )


def container_exists() -> bool:
    """Whether Docker on this machine knows the demo container (running or not)."""
    probe = subprocess.run(
        ["docker", "container", "inspect", CONTAINER], capture_output=True, check=False
    )
    return probe.returncode == 0


def journal() -> str:
    """The last lines of the stack's units inside the demo container, for failure messages."""
    probe = subprocess.run(
        ["docker", "exec", CONTAINER, "sh", "-c", JOURNAL],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout + probe.stderr


@pytest.fixture(scope="module")
def demo():
    """`make demo`'s output and the key it printed; the demo is taken down at the end."""
    started = time.monotonic()
    run = make("demo")
    elapsed = time.monotonic() - started
    print(f"make demo: exit {run.returncode} after {elapsed:.0f} s\n{run.stdout}\n{run.stderr}")
    try:
        assert run.returncode == 0, f"make demo failed:\n{run.stdout[-8000:]}\n{run.stderr[-4000:]}"
        key = subprocess.run(
            ["docker", "exec", CONTAINER, "cat", "/etc/localai-llamacpp/master.key"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        yield {"output": run.stdout, "key": key}
    finally:
        if container_exists():
            make("demo-down")


def run_readme_command(block: str, key: str, command: str) -> dict:
    """One of the README's curl commands after its `export KEY=` line, as a user pastes them;
    the JSON it printed."""
    export = next(line for line in commands(fill_key(block, key)) if line.startswith("export "))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f"{export}\n{command}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{command}\nexit {done.returncode}: {done.stderr}\n{journal()}"
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"{command}\nnot JSON ({error}): {done.stdout[:2000]}") from error


def curl_command(block: str, path: str) -> str:
    """The README's curl command for an endpoint path (exactly one)."""
    found = [c for c in commands(block) if c.startswith("curl ") and path in c]
    assert len(found) == 1, f"the README's demo block has {len(found)} curl lines for {path}"
    return found[0]


def test_generated_key_is_not_the_test_key(demo):
    """The demo runs with a key the role generated, never the tests' fixed one."""
    assert re.fullmatch(r"sk-[A-Za-z0-9]{48}", demo["key"]), "not a generated key"
    assert "molecule-test-key" not in demo["output"]


def test_make_demo_prints_the_key_and_the_readme_lines(demo):
    """What `make demo` prints is the README's block with the key filled in, ready to paste."""
    printed = demo["output"]
    assert demo["key"] in printed
    assert fill_key(readme_block(), demo["key"]) in printed, printed[-3000:]
    assert "make demo-down" in printed


def test_readme_chat_line_answers(demo):
    """The README's chat curl gets a real answer from the chat model."""
    block = readme_block()
    reply = run_readme_command(block, demo["key"], curl_command(block, "/v1/chat/completions"))
    assert "error" not in reply, reply
    content = reply["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    assert content.strip(), reply
    assert reply["choices"][0]["finish_reason"] in ("stop", "length"), reply


def test_readme_embeddings_line_answers(demo):
    """The README's embeddings curl gets one vector of the fixture model's width."""
    block = readme_block()
    reply = run_readme_command(block, demo["key"], curl_command(block, "/v1/embeddings"))
    assert "error" not in reply, reply
    vector = reply["data"][0]["embedding"]
    assert len(vector) == EMBEDDING_WIDTH
    assert all(isinstance(x, float) for x in vector)
    assert any(x != 0.0 for x in vector)


def test_readme_lines_with_a_wrong_key_are_refused(demo):
    """The same line with a key that is not the printed one gets HTTP 401 and no vector."""
    command = curl_command(readme_block(), "/v1/embeddings")
    done = subprocess.run(
        ["bash", "-c", f"export KEY=wrong-key-0000000000000000\n{command} -w '\\n%{{http_code}}'"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    body, _, status = done.stdout.rpartition("\n")
    assert status == "401", done.stdout
    assert "data" not in json.loads(body), body


def test_make_demo_down_removes_the_container(demo):
    """`make demo-down` leaves no container and nothing on 127.0.0.1:28000; it removes the demo's
    own volume, and keeps a lent one (the default scenario's, for the next `make test`)."""
    down = make("demo-down")
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    assert not container_exists()
    probe = subprocess.run(
        ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/28000"], capture_output=True, check=False
    )
    assert probe.returncode != 0, "something still listens on 127.0.0.1:28000"
    volumes = subprocess.run(
        ["docker", "volume", "ls", "--format", "{{.Name}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    lent = os.environ.get("LOCALAI_DEMO_DOCKER_VOLUME", OWN_VOLUME)
    assert (lent in volumes) == (lent != OWN_VOLUME), f"volume {lent}: {volumes}"
