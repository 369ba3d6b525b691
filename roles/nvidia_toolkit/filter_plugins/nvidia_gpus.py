"""Filters that turn `nvidia-smi` output into the facts the build needs.

Why a plugin and not Jinja: the seed built llama.cpp for the wrong GPU ("compiled for: 520")
and the P40 refused it. The architecture list and the CUDA version that can still build for it
are the two numbers that decide whether the image works, so they are computed here, in small
tested functions, and every refusal says which GPU, which variable and what to set.

Input is the output of the query below (`QUERY` joined with the format flags), one GPU a row:

    nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version \
               --format=csv,noheader,nounits
    0, Tesla P40, 6.1, 24576, 535.247.01
"""

from __future__ import annotations

import re
from typing import Any

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - lets the unit tests run without ansible installed

    class AnsibleFilterError(Exception):  # type: ignore[no-redef]
        """Stand-in for ansible's error type when ansible is not importable."""


QUERY_FIELDS = ("index", "name", "compute_cap", "memory.total", "driver_version")
QUERY_ARGS = (
    "--query-gpu=" + ",".join(QUERY_FIELDS),
    "--format=csv,noheader,nounits",
)

# Which compute capabilities each CUDA toolkit can compile for (nvcc real architectures).
# Sources (NVIDIA):
# - CUDA 12.0 dropped sm_35/sm_37; 12.x builds for Maxwell (5.x) to Hopper (9.0):
#   https://docs.nvidia.com/cuda/archive/12.6.3/cufft/deprecated-functionality.html
# - CUDA 12.8 added Blackwell sm_100, sm_101, sm_120; CUDA 12.9 added sm_103, sm_121:
#   https://docs.nvidia.com/cuda/archive/13.2.1/cuda-features-archive/index.html
# - CUDA 13.0 removed offline compilation for Maxwell, Pascal and Volta (5.x, 6.x, 7.0, 7.2;
#   "the minimum required architecture is Turing") and renamed Thor sm_101 to sm_110:
#   https://docs.nvidia.com/cuda/archive/13.0.0/cuda-toolkit-release-notes/index.html
#   https://docs.nvidia.com/cuda/cufft/deprecated-functionality.html (Starting from CUDA 13.0)
# - Seen on an H100 host, `nvcc --list-gpu-code` of CUDA 13.0 (V13.0.88) prints exactly:
#   sm_75 sm_80 sm_86 sm_87 sm_88 sm_89 sm_90 sm_100 sm_110 sm_103 sm_120 sm_121
#   (sm_88 is new in 13.0, so it is listed for 13.0 only). Same host: driver 580.159.04,
#   nvidia-smi row "0, NVIDIA H100 80GB HBM3, 9.0, 81559, 580.159.04" parses to arch "90".
# Kepler (3.5/3.7) is in no toolkit this role allows: the GPU is refused by name.
_CUDA12_BASE = frozenset(
    {"5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2"}
    | {"7.5", "8.0", "8.6", "8.7", "8.9", "9.0"}
)
CUDA_CAPABILITIES: dict[str, frozenset[str]] = {
    "12.4": _CUDA12_BASE,
    "12.5": _CUDA12_BASE,
    "12.6": _CUDA12_BASE,
    "12.8": _CUDA12_BASE | {"10.0", "10.1", "12.0"},
    "12.9": _CUDA12_BASE | {"10.0", "10.1", "10.3", "12.0", "12.1"},
    "13.0": frozenset(
        {"7.5", "8.0", "8.6", "8.7", "8.8", "8.9", "9.0"} | {"10.0", "10.3", "11.0", "12.0", "12.1"}
    ),
}

# Oldest driver branch each CUDA major runs on (CUDA minor version compatibility: 12.x runs on
# >= 525.60.13, 13.x on >= 580.65.06). Source: CUDA Toolkit release notes, table "CUDA Toolkit
# and Minimum Required Driver Version for CUDA Minor Version Compatibility".
MIN_DRIVER_MAJOR = {"12": 525, "13": 580}

VARIABLE = "nvidia_toolkit_cuda_version"
_CAP_RE = re.compile(r"^\d{1,2}\.\d$")
_ARCH_RE = re.compile(r"^\d{2,3}$")
# Unified-memory parts (GH200, GB10) can report no dedicated memory; that is not an error.
_NO_VALUE = {"[N/A]", "[Not Supported]", "N/A"}


def _version_key(version: str) -> tuple[int, ...]:
    """Sort CUDA versions numerically ("12.10" after "12.9")."""
    return tuple(int(part) for part in version.split("."))


def _major(version: str) -> str:
    """CUDA major version ("12.9" -> "12"): driver requirements and families go by it."""
    return version.split(".", maxsplit=1)[0]


def _parse_memory(raw: str, line_no: int, line: str) -> int:
    """Memory in MiB; accepts a trailing "MiB" so output without `nounits` also parses."""
    value = raw.removesuffix("MiB").strip()
    if value in _NO_VALUE:
        return 0
    if not value.isdigit():
        raise AnsibleFilterError(
            f"nvidia-smi row {line_no}: memory.total {raw!r} is not a number of MiB: {line!r}"
        )
    return int(value)


def _parse_row(line: str, line_no: int) -> dict[str, Any]:
    """One CSV row -> one GPU dict; raises a message that quotes the row, never a traceback."""
    cells = [cell.strip() for cell in line.split(",")]
    if len(cells) != len(QUERY_FIELDS):
        raise AnsibleFilterError(
            f"nvidia-smi row {line_no} has {len(cells)} columns, expected {len(QUERY_FIELDS)} "
            f"({','.join(QUERY_FIELDS)}): {line!r}. Was it run with "
            f"{' '.join(QUERY_ARGS)}?"
        )
    index, name, cap, memory, driver = cells
    if not index.isdigit():
        raise AnsibleFilterError(f"nvidia-smi row {line_no}: index {index!r} is not a number")
    if not _CAP_RE.match(cap):
        raise AnsibleFilterError(
            f"nvidia-smi row {line_no}: compute_cap {cap!r} of {name!r} is not like '6.1' "
            "(a driver older than 510 does not know compute_cap; upgrade the driver)"
        )
    return {
        "index": int(index),
        "name": name,
        "compute_cap": cap,
        "memory_mib": _parse_memory(memory, line_no, line),
        "driver_version": driver,
    }


def nvidia_gpus(stdout: str | None) -> list[dict[str, Any]]:
    """Parse the query output into a list of GPUs; empty output means no GPU."""
    if stdout is None:
        return []
    if not isinstance(stdout, str):
        raise AnsibleFilterError(f"nvidia_gpus expects nvidia-smi's stdout, got {type(stdout)}")
    lines = [line.strip() for line in stdout.splitlines()]
    return [_parse_row(line, n) for n, line in enumerate(lines, start=1) if line]


def _caps(gpus: list[dict[str, Any]]) -> list[str]:
    """Unique capabilities, sorted numerically ("8.6" before "12.0")."""
    return sorted({gpu["compute_cap"] for gpu in gpus}, key=_version_key)


def nvidia_cuda_architectures(gpus: list[dict[str, Any]]) -> str:
    """CMAKE_CUDA_ARCHITECTURES value: "6.1" -> "61", unique, sorted, ';'-joined; "" for none."""
    return ";".join(cap.replace(".", "") for cap in _caps(gpus))


def nvidia_cuda_arch_gpus(architectures: str) -> list[dict[str, Any]]:
    """Turn an override like "61;86" into pseudo-GPUs so it is checked like detected ones."""
    gpus = []
    for n, arch in enumerate(a.strip() for a in str(architectures).split(";") if a.strip()):
        if not _ARCH_RE.match(arch):
            raise AnsibleFilterError(
                f"nvidia_toolkit_cuda_architectures_override: {arch!r} is not like '61' or '120'"
            )
        cap = f"{int(arch[:-1])}.{arch[-1]}"
        gpus.append({"index": n, "name": f"override sm_{arch}", "compute_cap": cap})
    return gpus


def _versions_for(cap: str) -> list[str]:
    """CUDA versions (oldest first) that can build for one capability."""
    return sorted((v for v, caps in CUDA_CAPABILITIES.items() if cap in caps), key=_version_key)


def _describe(versions: list[str]) -> str:
    """Short form of a version list: every 12.x version -> "12.x", else "12.8/12.9/13.0"."""
    majors = {_major(v) for v in versions}
    if len(majors) == 1:
        major = majors.pop()
        if set(versions) == {v for v in CUDA_CAPABILITIES if _major(v) == major}:
            return f"{major}.x"
    return "/".join(versions)


def _label(gpu: dict[str, Any]) -> str:
    """Human name of a GPU for messages: "Tesla P40 (GPU 0, compute capability 6.1)"."""
    return f"{gpu['name']} (GPU {gpu['index']}, compute capability {gpu['compute_cap']})"


def _check_known(gpus: list[dict[str, Any]]) -> None:
    """Refuse a GPU no allowed toolkit can build for (Kepler 3.x, or one newer than the table)."""
    allowed = ", ".join(sorted(CUDA_CAPABILITIES, key=_version_key))
    for gpu in gpus:
        if not _versions_for(gpu["compute_cap"]):
            raise AnsibleFilterError(
                f"{_label(gpu)} is not supported by any CUDA version this role can use "
                f"({allowed}); llama.cpp cannot be built for it. Remove the GPU from the host, "
                "or build for the others with nvidia_toolkit_cuda_architectures_override."
            )


def _common_versions(gpus: list[dict[str, Any]]) -> list[str]:
    """CUDA versions (oldest first) that can build for every GPU at once."""
    return [
        v
        for v in sorted(CUDA_CAPABILITIES, key=_version_key)
        if all(gpu["compute_cap"] in CUDA_CAPABILITIES[v] for gpu in gpus)
    ]


def _driver_major(driver_version: str | None) -> int | None:
    """Major driver branch ("535.247.01" -> 535); None when unknown."""
    head = str(driver_version or "").split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _driver_allows(version: str, driver_version: str | None) -> bool:
    """Whether the installed driver can run code built with this CUDA version."""
    major = _driver_major(driver_version)
    return major is None or major >= MIN_DRIVER_MAJOR[_major(version)]


def _auto(gpus: list[dict[str, Any]], driver_version: str | None) -> str:
    """Newest CUDA that builds for every GPU and runs on the driver: 13.x first, else 12.x."""
    common = [v for v in _common_versions(gpus) if _driver_allows(v, driver_version)]
    if common:
        return common[-1]
    split = "; ".join(
        f"{_label(g)}: CUDA {_describe(_versions_for(g['compute_cap']))}" for g in gpus
    )
    raise AnsibleFilterError(
        f"No single CUDA version builds for all GPUs on driver {driver_version} ({split}). "
        f"Set nvidia_toolkit_cuda_architectures_override to the GPUs you want to serve, "
        f"or upgrade the driver; {VARIABLE}: auto found nothing to pick."
    )


def _check_requested(gpus: list[dict[str, Any]], requested: str, driver: str | None) -> str:
    """Validate an explicit version; the message names the GPU and the value to set instead."""
    for gpu in gpus:
        if gpu["compute_cap"] in CUDA_CAPABILITIES[requested]:
            continue
        fits = [v for v in _common_versions(gpus) if _driver_allows(v, driver)]
        same_major = [v for v in fits if _major(v) == _major(requested)]
        fits = same_major or fits
        family = _describe(_versions_for(gpu["compute_cap"]))
        fix = f"set {VARIABLE}: '{fits[-1]}'" if fits else f"set {VARIABLE}: auto"
        raise AnsibleFilterError(
            f"{_label(gpu)} needs CUDA {family}, but {VARIABLE} is '{requested}': {fix}"
        )
    if not _driver_allows(requested, driver):
        need = MIN_DRIVER_MAJOR[_major(requested)]
        raise AnsibleFilterError(
            f"CUDA {requested} needs NVIDIA driver {need} or newer, this host has {driver}: "
            f"upgrade the driver or set {VARIABLE}: auto"
        )
    return requested


def nvidia_cuda_version(
    gpus: list[dict[str, Any]], requested: str = "auto", driver_version: str | None = None
) -> str:
    """The CUDA version to build with: "auto" picks one, an explicit one is checked.

    Returns "" when there is no GPU (CPU build). Raises AnsibleFilterError with a message that
    names `nvidia_toolkit_cuda_version` and the fix when the GPUs and the version disagree.
    """
    requested = str(requested).strip()
    if requested != "auto" and requested not in CUDA_CAPABILITIES:
        choices = ", ".join(["auto", *sorted(CUDA_CAPABILITIES, key=_version_key)])
        raise AnsibleFilterError(f"{VARIABLE}: '{requested}' is not one of {choices}")
    if not gpus:
        return ""
    if driver_version is None:
        driver_version = gpus[0].get("driver_version")
    _check_known(gpus)
    if requested == "auto":
        return _auto(gpus, driver_version)
    return _check_requested(gpus, requested, driver_version)


def nvidia_gpus_report(stdout: str | None) -> dict[str, Any]:
    """Like nvidia_gpus, but returns {"gpus", "error"} so a task can assert with a clean message."""
    try:
        return {"gpus": nvidia_gpus(stdout), "error": ""}
    except AnsibleFilterError as err:
        return {"gpus": [], "error": str(err)}


def nvidia_cuda_report(
    gpus: list[dict[str, Any]], requested: str = "auto", driver_version: str | None = None
) -> dict[str, str]:
    """Like nvidia_cuda_version, but returns {"version", "error"} for an assert's fail_msg."""
    try:
        return {"version": nvidia_cuda_version(gpus, requested, driver_version), "error": ""}
    except AnsibleFilterError as err:
        return {"version": "", "error": str(err)}


class FilterModule:
    """Ansible entry point: the filters this role's tasks use."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {
            "nvidia_gpus": nvidia_gpus,
            "nvidia_cuda_architectures": nvidia_cuda_architectures,
            "nvidia_cuda_arch_gpus": nvidia_cuda_arch_gpus,
            "nvidia_cuda_version": nvidia_cuda_version,
            "nvidia_gpus_report": nvidia_gpus_report,
            "nvidia_cuda_report": nvidia_cuda_report,
        }
