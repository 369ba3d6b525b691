"""Testinfra fixtures of every scenario (pytest loads this for molecule/*/tests): print the unit's
journal when a test fails, so CI logs say why."""

from __future__ import annotations

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the last journal lines of the stack's units to every failed test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    host = item.funcargs.get("host")
    if host is None:
        return
    journal = host.run(
        "journalctl --no-pager -n 80 -u docker -u localai-llamacpp 2>&1 || true"
    ).stdout
    report.sections.append(("journal (docker, localai-llamacpp)", journal))
