"""Filters that turn `nvidia-smi` output into the facts the build needs.

Why a plugin and not Jinja: the seed built llama.cpp for the wrong GPU ("compiled for: 520")
and the P40 refused it. The architecture list, the CUDA version that can still build for it and
the driver that can run that CUDA version's image are what decide whether the image works, so
they are computed here, in small tested functions, and every refusal says which GPU or driver,
which variable and what to set.

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

# Which NVIDIA driver can run the image built with each CUDA version. Two rules, both must hold.
#
# 1. The driver runs the CUDA major itself (minor version compatibility): 12.x on >= 525.60.13,
#    13.x on >= 580.65.06. Source: CUDA Toolkit release notes, table "CUDA Toolkit and Minimum
#    Required Driver Version for CUDA Minor Version Compatibility"; NVIDIA's "Supported Drivers
#    and CUDA Toolkit Versions" (R535 and R570: CUDA 12.x, R580: CUDA 13.x through minor version
#    compatibility). With this rule the engine runs whether or not the container runtime puts the
#    image's forward-compatibility libraries (cuda-compat) in front of the driver's: the legacy
#    nvidia runtime does when they are newer than the driver (libnvidia-container,
#    src/cli/compat_mode.c), a CDI spec may not.
MIN_DRIVER_MAJOR = {"12": 525, "13": 580}

# 2. The image's own NVIDIA_REQUIRE_CUDA accepts the driver. The nvidia/cuda images carry it
#    (dist/<version>/ubuntu2404/base/Dockerfile on gitlab.com/nvidia/container-images/cuda);
#    space-separated alternatives are ORed, comma-separated conditions ANDed (NVIDIA Container
#    Toolkit, "Specialized Configurations with Docker", constraints), and libnvidia-container
#    checks them for every visible GPU (src/cli/configure.c). The legacy runtime refuses to start
#    a container that fails them; CDI skips the check, so this one is the only check there.
#    Every value has the same shape:
#      "cuda>=12.9 brand=tesla,driver>=535,driver<536 brand=nvidia,driver>=535,driver<536 ..."
#    - `cuda>=X.Y`: the driver's own CUDA version (what cuDriverGetVersion reports, the
#      "CUDA Version" of nvidia-smi) is at least X.Y. The first branch reporting each version
#      (CUDA Toolkit release notes, "CUDA Toolkit and Corresponding Driver Versions": 12.4 GA
#      550.54.14, 12.5 GA 555.42.02, 12.6 GA 560.28.03, 12.8 GA 570.26, 12.9 GA 575.51.03,
#      13.0 GA 580.65.06) is DRIVER_FOR_CUDA.
#    - `brand=B,driver>=N,driver<N+1`: CUDA forward compatibility on driver branch N for GPUs of
#      brand B. The branches per image are IMAGE_DRIVER_BRANCHES, read from the images' values:
#      12.4.1 (dist/12.4.1), 12.5.1 (the environment of an image built on it), 12.6.3
#      (dist/12.6.3/ubuntu2404/base), 12.8.1 (the nvidia/cuda:12.8.1 image config), 12.9.x
#      (12.9.0 and 12.9.1 carry the same list), 13.0.x (read from 13.0.2; rule 1 keeps every
#      13.x image off the branches it lists, all older than 580, so its exact list never decides).
DRIVER_FOR_CUDA = {"12.4": 550, "12.5": 555, "12.6": 560, "12.8": 570, "12.9": 575, "13.0": 580}
IMAGE_DRIVER_BRANCHES: dict[str, tuple[int, ...]] = {
    "12.4": (470, 525, 535),
    "12.5": (470, 535, 550),
    "12.6": (470, 535, 550),
    "12.8": (470, 535, 550, 560, 565),
    "12.9": (535, 550, 560, 565, 570),
    "13.0": (535, 550, 565, 570, 575),
}
#    The brands of those alternatives: 12.4.1 lists tesla, unknown, nvidia, nvidiartx, geforce,
#    geforcertx, quadro, quadrortx, titan, titanrtx; from 12.5 on the images list unknown, grid,
#    tesla, nvidia, quadro, quadrortx, nvidiartx and the virtual-GPU brands (vapps, vpc, vcs, vws,
#    cloudgaming), no longer GeForce or TITAN. Forward compatibility works only on data-center
#    GPUs and select RTX SKUs (CUDA Compatibility guide, "Forward Compatibility"; the cuda-compat
#    libraries break CUDA on other cards: gitlab.com/nvidia/container-images/cuda issue 183), so
#    GeForce and TITAN cards (and NVS, which no image lists) are held to `cuda>=X.Y` on every
#    image, 12.4 included. The role's nvidia-smi query has no brand column; a GeForce, TITAN or
#    NVS card says so in its name (GPUs named by nvidia_toolkit_cuda_architectures_override have
#    no name and count as data-center GPUs).
NATIVE_ONLY_BRANDS = ("GEFORCE", "TITAN", "NVS")

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


def _native_only(gpu: dict[str, Any]) -> bool:
    """True for a GeForce, TITAN or NVS card (by name): forward compatibility does not cover it."""
    words = re.split(r"[\s_-]+", str(gpu.get("name", "")).upper())
    return any(brand in words for brand in NATIVE_ONLY_BRANDS)


def _driver_refusal(version: str, driver_version: str | None, gpus: list[dict[str, Any]]) -> str:
    """Why the driver cannot run the CUDA `version` image; "" when it can (or is unknown).

    The two rules above: the driver runs the CUDA major itself, and the image's
    NVIDIA_REQUIRE_CUDA accepts it for every GPU (the driver reports CUDA >= version, or it is
    a listed branch and every GPU is one that forward compatibility covers).
    """
    branch = _driver_major(driver_version)
    if branch is None:
        return ""
    floor = MIN_DRIVER_MAJOR[_major(version)]
    if branch < floor:
        return (
            f"CUDA {version} needs NVIDIA driver {floor} or newer, this host has {driver_version}"
        )
    native = DRIVER_FOR_CUDA[version]
    listed = IMAGE_DRIVER_BRANCHES[version]
    consumer = [g for g in gpus if _native_only(g)]
    if branch >= native or (branch in listed and not consumer):
        return ""
    *head, last = [str(b) for b in listed]
    rule = (
        f"the nvidia/cuda {version} image starts only where the driver reports CUDA {version} "
        f"or newer (branch {native} or newer) or, on data-center GPUs, on driver branch "
        f"{', '.join(head)} or {last} (its NVIDIA_REQUIRE_CUDA)"
    )
    if branch not in listed:
        return f"{rule}, and driver {driver_version} is neither"
    return (
        f"{rule}, and {_label(consumer[0])} is not a data-center GPU (CUDA forward "
        f"compatibility does not work on it), so driver {driver_version} is too old for it"
    )


def _driver_allows(version: str, driver_version: str | None, gpus: list[dict[str, Any]]) -> bool:
    """Whether the installed driver can run the image built with this CUDA version."""
    return not _driver_refusal(version, driver_version, gpus)


def _upgrade_hint(versions: list[str], driver: str | None, gpus: list[dict[str, Any]]) -> str:
    """The nearest newer driver branch that runs one of `versions` (oldest first), and the
    nearest that runs the newest of them, e.g. "branch 550 (CUDA 12.4), or 580 (CUDA 13.0)"."""
    current = _driver_major(driver) or 0
    branches = sorted(
        b
        for b in {*MIN_DRIVER_MAJOR.values(), *DRIVER_FOR_CUDA.values()}
        | {b for listed in IMAGE_DRIVER_BRANCHES.values() for b in listed}
        if b > current
    )

    def runs(branch: int) -> list[str]:
        return [v for v in versions if _driver_allows(v, str(branch), gpus)]

    first = next(b for b in branches if runs(b))
    hint = f"upgrade the NVIDIA driver to branch {first} (CUDA {runs(first)[-1]})"
    if runs(first)[-1] == versions[-1]:
        return hint
    best = next(b for b in branches if versions[-1] in runs(b))
    return f"{hint}, or {best} (CUDA {versions[-1]})"


def _auto(gpus: list[dict[str, Any]], driver_version: str | None) -> str:
    """Newest CUDA that builds for every GPU and runs on the driver: 13.x first, else 12.x."""
    buildable = _common_versions(gpus)
    common = [v for v in buildable if _driver_allows(v, driver_version, gpus)]
    if common:
        return common[-1]
    if buildable:
        raise AnsibleFilterError(
            f"NVIDIA driver {driver_version} runs none of the CUDA images that build for these "
            f"GPUs ({', '.join(buildable)}): "
            f"{_driver_refusal(buildable[0], driver_version, gpus)}. Fix: "
            f"{_upgrade_hint(buildable, driver_version, gpus)}; {VARIABLE}: auto found nothing "
            "to pick."
        )
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
        fits = [v for v in _common_versions(gpus) if _driver_allows(v, driver, gpus)]
        same_major = [v for v in fits if _major(v) == _major(requested)]
        fits = same_major or fits
        family = _describe(_versions_for(gpu["compute_cap"]))
        fix = f"set {VARIABLE}: '{fits[-1]}'" if fits else f"set {VARIABLE}: auto"
        raise AnsibleFilterError(
            f"{_label(gpu)} needs CUDA {family}, but {VARIABLE} is '{requested}': {fix}"
        )
    refusal = _driver_refusal(requested, driver, gpus)
    if refusal:
        fits = [v for v in _common_versions(gpus) if _driver_allows(v, driver, gpus)]
        upgrade = f"upgrade the NVIDIA driver to branch {DRIVER_FOR_CUDA[requested]} or newer"
        fix = f"set {VARIABLE}: '{fits[-1]}' (what auto picks), or {upgrade}" if fits else upgrade
        raise AnsibleFilterError(f"{VARIABLE} is '{requested}' but {refusal}; fix: {fix}")
    return requested


def nvidia_cuda_version(
    gpus: list[dict[str, Any]], requested: str = "auto", driver_version: str | None = None
) -> str:
    """The CUDA version to build with: "auto" picks one, an explicit one is checked.

    gpus: the parsed GPUs ({name, compute_cap, driver_version, ...}); requested: "auto" or a
    key of CUDA_CAPABILITIES; driver_version: the loaded driver ("535.247.01"; default: the
    first GPU's, unknown: not checked). A version must build for every GPU's compute capability
    and its nvidia/cuda image must run on the driver (MIN_DRIVER_MAJOR and the image's
    NVIDIA_REQUIRE_CUDA, see above); "auto" takes the newest such version. Returns "" when there
    is no GPU (CPU build). Raises AnsibleFilterError with a message that names
    `nvidia_toolkit_cuda_version`, the GPU or the driver, and the fix.
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
