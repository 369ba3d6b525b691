"""A dry run on the serving host: `site.yml --check --diff` runs to the end and changes nothing.

The first run has nothing to change on the converged target; the second asks for a new
balancer check interval, so it must show haproxy.cfg's diff and still leave the file, the
container and the answers as they were.
"""

from __future__ import annotations

import pytest
from scenario import CONTAINER
from test_bad_input import chat_serves, recap_of, run_converge
from test_balancer import CONFIG


def started_at(host) -> str:
    """When the stack's container started (a restart changes it)."""
    return host.check_output(f"docker inspect -f '{{{{.State.StartedAt}}}}' {CONTAINER}")


@pytest.fixture(scope="module")
def before(host) -> dict[str, str]:
    status, body = chat_serves()
    assert status == 200, f"the stack does not serve before the dry runs: {status} {body}"
    return {"started": started_at(host), "config": host.file(CONFIG).content_string}


def assert_untouched(host, before: dict[str, str]) -> None:
    assert started_at(host) == before["started"], "the dry run restarted the container"
    assert host.file(CONFIG).content_string == before["config"], "the dry run wrote haproxy.cfg"
    status, body = chat_serves()
    assert status == 200, f"the stack stopped serving after the dry run: {status} {body}"


def test_check_diff_on_the_converged_host_finds_nothing_to_change(host, before):
    result = run_converge("--check", "--diff", timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the dry run failed:\n{output[-4000:]}"
    recap = recap_of(result.stdout)
    assert recap["failed"] == 0 and recap["changed"] == 0, f"{recap}\n{output[-4000:]}"
    assert_untouched(host, before)


def test_check_diff_shows_a_change_without_making_it(host, before):
    result = run_converge(
        "--check", "--diff", "-e", "localai_balancer_check_interval=7", timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the dry run failed:\n{output[-4000:]}"
    assert recap_of(result.stdout)["changed"] >= 1, output[-4000:]
    assert "inter 7s" in output, f"no diff of haproxy.cfg shown:\n{output[-4000:]}"
    assert_untouched(host, before)
