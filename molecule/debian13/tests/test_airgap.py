"""The air-gapped site: the target reaches nothing outside, and everything came from the bundle.

The stack serving here (the endpoint checks of the linked modules pass against it) was
provisioned by site.yml from the test bundle with the target's outbound traffic dropped and
the nested containers' too (prepare.yml), so the image build, the package installs and the
model placement fetched nothing from outside: a step that did would have failed. A bundle that
lacks one file stops the run in preflight, naming the file and the command that adds it, and the
stack keeps serving.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import openai
from scenario import API_KEY, BASE_URL, PROJECT

BUNDLE = PROJECT / ".cache" / "bundle"
CONVERGE = PROJECT / "molecule" / "default" / "converge.yml"
PREFLIGHT_PLAY = "PLAY [Preflight checks (change nothing)]"
STACK_PLAY = "PLAY [Provision the localai-llamacpp stack]"


def test_target_cannot_reach_the_internet(host):
    result = host.run("curl -sS -m 5 -o /dev/null http://deb.debian.org/debian/")
    assert result.rc != 0, "the air-gapped target reached deb.debian.org"


def test_docker_came_from_the_bundles_repository(host):
    policy = host.run("apt-cache policy docker.io docker-buildx").stdout
    assert "/opt/localai-llamacpp/bundle" in policy, policy
    assert host.package("docker-buildx").is_installed


def run_converge(*args: str) -> subprocess.CompletedProcess:
    """site.yml (molecule's converge) on the target again, as molecule runs it."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    assert inventory, "run under `molecule verify` (MOLECULE_INVENTORY_FILE is not set)"
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.setdefault("ANSIBLE_ROLES_PATH", str(PROJECT / "roles"))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / "collections"))
    return subprocess.run(
        [str(ansible_playbook), "-i", inventory, str(CONVERGE), *args],
        env=env,
        cwd=CONVERGE.parent,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_a_bundle_without_one_wheel_stops_in_preflight_and_the_stack_keeps_serving(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLE, copy, copy_function=os.link)  # hard links: no second copy on disk
    wheel = sorted(copy.glob("wheels/*/*.whl"))[0]
    wheel.unlink()

    result = run_converge("-e", f"localai_bundle={copy}")
    output = result.stdout + result.stderr

    assert result.returncode != 0, output[-3000:]
    assert PREFLIGHT_PLAY in output, output[-3000:]
    assert STACK_PLAY not in output, "the run went past preflight"
    assert wheel.name in output, output[-3000:]
    assert "playbooks/bundle.yml" in output, output[-3000:]

    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=60)
    reply = client.chat.completions.create(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Hi"}], max_tokens=8
    )
    assert reply.choices[0].message.content
