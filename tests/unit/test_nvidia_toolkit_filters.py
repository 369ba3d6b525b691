"""Unit tests for roles/nvidia_toolkit/filter_plugins/nvidia_gpus.py.

The plugin is imported by path so a plain `pytest` from the repository root works without
installing the role as a collection.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(
    0, str(Path(__file__).resolve().parents[2] / "roles" / "nvidia_toolkit" / "filter_plugins")
)

import nvidia_gpus as ng

P40 = "{i}, Tesla P40, 6.1, 24576, 535.247.01"


def rows(*lines: str) -> str:
    """nvidia-smi prints one GPU a line, with a trailing newline."""
    return "\n".join(lines) + "\n"


def three_p40() -> list[dict]:
    return ng.nvidia_gpus(rows(*(P40.format(i=i) for i in range(3))))


# --- parsing ---------------------------------------------------------------------------------


def test_no_gpu_output_is_empty_list():
    assert ng.nvidia_gpus("") == []
    assert ng.nvidia_gpus("\n\n") == []
    assert ng.nvidia_gpus(None) == []


def test_one_gpu_is_parsed_to_typed_fields():
    gpus = ng.nvidia_gpus("0, NVIDIA GeForce RTX 3090, 8.6, 24576, 575.57.08\n")
    assert gpus == [
        {
            "index": 0,
            "name": "NVIDIA GeForce RTX 3090",
            "compute_cap": "8.6",
            "memory_mib": 24576,
            "driver_version": "575.57.08",
        }
    ]


def test_memory_with_unit_suffix_and_na_are_accepted():
    gpus = ng.nvidia_gpus(
        rows("0, Tesla P40, 6.1, 24576 MiB, 535.247.01", "1, NVIDIA GB10, 12.1, [N/A], 580.95.05")
    )
    assert [g["memory_mib"] for g in gpus] == [24576, 0]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("0, Tesla P40, 6.1, 24576", "4 columns, expected 5"),
        ("0, Tesla P40, 6.1, 24576, 535.247.01, extra", "6 columns"),
        ("0, Tesla P40, six, 24576, 535.247.01", "compute_cap 'six'"),
        ("0, Tesla P40, 6.1, lots, 535.247.01", "memory.total 'lots'"),
        ("x, Tesla P40, 6.1, 24576, 535.247.01", "index 'x'"),
        (
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
            "1 columns",
        ),
    ],
)
def test_malformed_output_gives_a_clear_error(line, needle):
    with pytest.raises(ng.AnsibleFilterError, match="nvidia-smi row 1") as err:
        ng.nvidia_gpus(rows(line))
    assert needle in str(err.value)


def test_non_string_input_is_refused():
    with pytest.raises(ng.AnsibleFilterError, match="expects nvidia-smi's stdout"):
        ng.nvidia_gpus(["0, Tesla P40, 6.1, 24576, 535.247.01"])


# --- CMake architectures ---------------------------------------------------------------------


def test_architectures_none_is_empty_string():
    assert ng.nvidia_cuda_architectures([]) == ""


def test_architectures_one_gpu():
    assert ng.nvidia_cuda_architectures(ng.nvidia_gpus(P40.format(i=0))) == "61"


def test_architectures_several_identical_are_deduplicated():
    assert ng.nvidia_cuda_architectures(three_p40()) == "61"


def test_architectures_mixed_are_sorted_numerically():
    gpus = ng.nvidia_gpus(
        rows(
            "0, NVIDIA RTX PRO 6000 Blackwell, 12.0, 97887, 580.95.05",
            "1, NVIDIA GeForce RTX 3090, 8.6, 24576, 580.95.05",
            "2, NVIDIA GeForce RTX 2080 Ti, 7.5, 11264, 580.95.05",
            "3, NVIDIA GeForce RTX 3090, 8.6, 24576, 580.95.05",
        )
    )
    assert ng.nvidia_cuda_architectures(gpus) == "75;86;120"


def test_override_round_trips_to_capabilities():
    gpus = ng.nvidia_cuda_arch_gpus("61; 86;120")
    assert [g["compute_cap"] for g in gpus] == ["6.1", "8.6", "12.0"]
    assert ng.nvidia_cuda_architectures(gpus) == "61;86;120"
    assert ng.nvidia_cuda_arch_gpus("") == []


def test_override_rejects_garbage():
    with pytest.raises(ng.AnsibleFilterError, match="nvidia_toolkit_cuda_architectures_override"):
        ng.nvidia_cuda_arch_gpus("sm_61")


# --- CUDA version selection ------------------------------------------------------------------


def test_no_gpu_selects_no_cuda():
    assert ng.nvidia_cuda_version([], "auto") == ""
    assert ng.nvidia_cuda_version([], "13.0") == ""


def test_auto_picks_newest_12x_for_pascal():
    assert ng.nvidia_cuda_version(three_p40(), "auto") == "12.9"


def test_auto_picks_13_when_every_gpu_and_the_driver_allow_it():
    gpus = ng.nvidia_gpus(
        rows(
            "0, NVIDIA GeForce RTX 2080 Ti, 7.5, 11264, 580.95.05",
            "1, NVIDIA H100, 9.0, 81559, 580.95.05",
        )
    )
    assert ng.nvidia_cuda_version(gpus, "auto") == "13.0"


def test_auto_stays_on_12x_with_a_pre_580_driver():
    gpus = ng.nvidia_gpus("0, NVIDIA H100 80GB HBM3, 9.0, 81559, 570.172.08\n")
    assert ng.nvidia_cuda_version(gpus, "auto") == "12.9"


def test_auto_mixed_pascal_and_blackwell_needs_12_8_or_newer():
    gpus = ng.nvidia_gpus(
        rows(
            "0, Tesla P40, 6.1, 24576, 580.95.05",
            "1, NVIDIA GeForce RTX 5090, 12.0, 32607, 580.95.05",
        )
    )
    assert ng.nvidia_cuda_version(gpus, "auto") == "12.9"


def test_explicit_version_that_fits_is_returned():
    assert ng.nvidia_cuda_version(three_p40(), "12.6") == "12.6"


def test_cuda13_with_p40_names_the_gpu_the_variable_and_the_fix():
    with pytest.raises(ng.AnsibleFilterError) as err:
        ng.nvidia_cuda_version(three_p40(), "13.0")
    message = str(err.value)
    assert "Tesla P40 (GPU 0, compute capability 6.1) needs CUDA 12.x" in message
    assert "nvidia_toolkit_cuda_version: '12.9'" in message


def test_old_12x_with_blackwell_suggests_a_newer_one():
    gpus = ng.nvidia_gpus("0, NVIDIA GeForce RTX 5090, 12.0, 32607, 575.57.08\n")
    with pytest.raises(ng.AnsibleFilterError, match=r"needs CUDA 12\.8/12\.9/13\.0.*'12\.9'"):
        ng.nvidia_cuda_version(gpus, "12.6")


def test_explicit_13_on_old_driver_is_refused():
    gpus = ng.nvidia_gpus("0, NVIDIA H100, 9.0, 81559, 570.172.08\n")
    with pytest.raises(ng.AnsibleFilterError, match=r"driver 580 or newer.*nvidia_toolkit_cuda"):
        ng.nvidia_cuda_version(gpus, "13.0")


@pytest.mark.parametrize("cap", ["3.5", "3.7"])
def test_kepler_is_unsupported_and_named(cap):
    gpus = ng.nvidia_gpus(f"0, Tesla K80, {cap}, 11441, 470.256.02\n")
    for requested in ("auto", "12.9"):
        with pytest.raises(ng.AnsibleFilterError, match=f"Tesla K80 .*{cap}.*not supported"):
            ng.nvidia_cuda_version(gpus, requested)


def test_no_common_version_is_explained():
    gpus = ng.nvidia_gpus(
        rows("0, Tesla P40, 6.1, 24576, 580.95.05", "1, NVIDIA Jetson Thor, 11.0, 0, 580.95.05")
    )
    with pytest.raises(ng.AnsibleFilterError, match="No single CUDA version") as err:
        ng.nvidia_cuda_version(gpus, "auto")
    assert "Tesla P40" in str(err.value)
    assert "Jetson Thor" in str(err.value)


def test_unknown_requested_version_lists_choices():
    with pytest.raises(ng.AnsibleFilterError, match=r"nvidia_toolkit_cuda_version: '11\.8'.*auto"):
        ng.nvidia_cuda_version(three_p40(), "11.8")


def test_filter_module_exposes_the_filters():
    assert set(ng.FilterModule().filters()) == {
        "nvidia_gpus",
        "nvidia_cuda_architectures",
        "nvidia_cuda_arch_gpus",
        "nvidia_cuda_version",
        "nvidia_gpus_report",
        "nvidia_cuda_report",
    }


def test_reports_carry_the_error_instead_of_raising():
    assert ng.nvidia_gpus_report("0, Tesla P40, 6.1\n")["error"].startswith("nvidia-smi row 1")
    assert ng.nvidia_gpus_report(P40.format(i=0))["gpus"][0]["compute_cap"] == "6.1"
    report = ng.nvidia_cuda_report(three_p40(), "13.0")
    assert report["version"] == ""
    assert "nvidia_toolkit_cuda_version: '12.9'" in report["error"]
    assert ng.nvidia_cuda_report(three_p40(), "auto") == {"version": "12.9", "error": ""}
