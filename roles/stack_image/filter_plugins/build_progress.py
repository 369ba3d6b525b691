"""Filters of the stack_image role: one readable progress line for an image build in flight.

The build runs in the background (async) and writes Docker's plain progress output to a log on
the host; every poll reads the lines of that log that matter (`__stack_image_build_grep` in the
role's vars: step headers, step ends and the compile's progress lines, each cut to its
matched part by `grep -o`) and turns them into one line:

    image build: 6 min 10 s, step [builder 7/9], compile 312/456 (68%), about 3 min left

BuildKit's plain output (docker build --progress=plain, Docker 20.10 and buildx alike) names
each step once when it starts, "#12 [builder 7/9] RUN ...", again when its output resumes
after another step's, prefixes every output line with the step number and the seconds since
the step started, "#12 95.12 [ 45%] Building CXX object ...", and ends a step with
"#12 DONE 123.4s", "#12 CACHED", "#12 ERROR: ..." or "#12 CANCELED". The compile's lines come
from CMake inside the step: "[ 45%] Building ..." with Makefiles (the image's build script),
"[312/456] Building ..." with Ninja.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_HEADER = re.compile(r"^#(\d+) (\[[^\]]*\]|[a-z][a-z ]*)$")
_END = re.compile(r"^#(\d+) (DONE\b|CACHED|ERROR|CANCELED)")
_COMPILE = re.compile(
    r"^#(\d+) (\d+(?:\.\d+)?) \[\s*(?:(\d+)%|(\d+)/(\d+))\] (?:Building|Linking|Built)"
)


@dataclass(frozen=True)
class CompileMark:
    """One compile progress line: its step, seconds since the step started, fraction done."""

    step: str  # BuildKit's step number, "12"
    seconds: float  # since the step started
    fraction: float  # 0..1
    count: str  # "312/456" (Ninja), "" (Makefiles say only the percentage)


def stack_image_duration(seconds: float) -> str:
    """Write a duration for people: "45 s", "6 min 10 s", "1 h 05 min" (seconds, >= 0)."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if minutes < 10 and rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60:02d} min"


def _compile_mark(match: re.Match[str]) -> CompileMark:
    step, seconds, percent, done, total = match.groups()
    if percent is not None:
        return CompileMark(step, float(seconds), int(percent) / 100, "")
    return CompileMark(step, float(seconds), int(done) / max(int(total), 1), f"{done}/{total}")


def _compile_text(first: CompileMark, last: CompileMark) -> str:
    """Say "compile 312/456 (68%), about 3 min left" (Ninja) or "compile 68%, about 3 min left"."""
    percent = f"{int(last.fraction * 100)}%"
    text = f"compile {last.count} ({percent})" if last.count else f"compile {percent}"
    left = _compile_left(first, last)
    return text if left is None else f"{text}, about {stack_image_duration(left)} left"


def _compile_left(first: CompileMark, last: CompileMark) -> float | None:
    """Seconds the compile still needs at the rate between its first and its last line.

    Both times count from the step's start (BuildKit's prefix), so the rate is the compile's
    own, whatever else the build did before it. None while there is no rate yet.
    """
    if last.seconds <= first.seconds or last.fraction <= first.fraction:
        return None
    rate = (last.fraction - first.fraction) / (last.seconds - first.seconds)  # per second
    return (1 - last.fraction) / rate


def _outcome(status: Mapping[str, Any] | None) -> str:
    """Say "" while the job runs, "done" or "failed (exit code 1)" once it has finished."""
    if not status or not status.get("finished"):
        return ""
    if status.get("rc") == 0:
        return "done"
    if status.get("rc") is not None:
        return f"failed (exit code {status['rc']})"
    return f"failed ({status.get('msg') or 'no exit code'})"


def stack_image_build_progress(
    lines: Iterable[str] | str | None, elapsed: float, status: Mapping[str, Any] | None = None
) -> str:
    """One progress line for an image build in flight.

    lines: the build log's matched lines (see the module docstring), oldest first; a string is
    split into lines. elapsed: seconds since the build started (the controller's clock).
    status: the job's async_status result ({"finished": bool, "rc": int, "msg": str}); once it
    says finished, the line says "done" or "failed (exit code 1)" instead of the running steps.

    Returns e.g. "image build: 6 min 10 s, step [builder 7/9], compile 312/456 (68%), about
    3 min left". The step part lists every step that has started and not ended (stages run in
    parallel); the compile part shows the last compile line while its step runs, and the time
    the compile still needs at its rate so far; a step that ended in ERROR is named as failed.
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    names: dict[str, str] = {}
    ended: dict[str, str] = {}
    first: dict[str, CompileMark] = {}
    last: CompileMark | None = None
    for raw in lines or []:
        line = raw.strip()
        if header := _HEADER.match(line):
            names.setdefault(header.group(1), header.group(2))
        elif end := _END.match(line):
            ended[end.group(1)] = end.group(2)
        elif mark := _COMPILE.match(line):
            last = _compile_mark(mark)
            first.setdefault(last.step, last)
    parts = [f"image build: {stack_image_duration(elapsed)}"]
    if outcome := _outcome(status):
        return f"{parts[0]}, {outcome}"
    running = [name for step, name in names.items() if step not in ended]
    failed = [names[step] for step, state in ended.items() if state == "ERROR" and step in names]
    if failed:
        parts.append("failed in " + " ".join(failed))
    elif running:
        parts.append(("steps " if len(running) > 1 else "step ") + " ".join(running))
    else:
        parts.append("starting" if not names else "finishing")
    if last is not None and last.step not in ended:
        parts.append(_compile_text(first[last.step], last))
    return ", ".join(parts)


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, object]:
        """Map filter names to functions."""
        return {
            "stack_image_build_progress": stack_image_build_progress,
            "stack_image_duration": stack_image_duration,
        }
