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


# --- driver against image (NVIDIA_REQUIRE_CUDA and minor version compatibility) -------------

DATA_CENTER = ("Tesla P40", "6.1")  # Pascal: CUDA 12.x only
HOPPER = ("NVIDIA H100 80GB HBM3", "9.0")
GEFORCE = ("NVIDIA GeForce RTX 3090", "8.6")


def one(card: tuple[str, str], driver: str) -> list[dict]:
    name, cap = card
    return ng.nvidia_gpus(f"0, {name}, {cap}, 24576, {driver}\n")


@pytest.mark.parametrize(
    ("card", "driver", "picked"),
    [
        # 525: CUDA 12.0's driver; only 12.4.1 lists branch 525 for forward compatibility.
        (DATA_CENTER, "525.147.05", "12.4"),
        (HOPPER, "525.147.05", "12.4"),
        # 535 LTS: every 12.x image lists it; 13.0 needs 580 itself.
        (DATA_CENTER, "535.247.01", "12.9"),
        (HOPPER, "535.247.01", "12.9"),
        (DATA_CENTER, "550.163.01", "12.9"),
        (HOPPER, "555.58.02", "12.5"),  # listed by no newer image, reports CUDA 12.5 itself
        (HOPPER, "570.172.08", "12.9"),
        (HOPPER, "575.64.05", "12.9"),
        (HOPPER, "580.95.05", "13.0"),
        (DATA_CENTER, "580.95.05", "12.9"),
        # GeForce: no forward compatibility, so the driver's own CUDA version decides.
        (GEFORCE, "550.163.01", "12.4"),
        (GEFORCE, "560.35.03", "12.6"),
        (GEFORCE, "570.172.08", "12.8"),
        (GEFORCE, "575.64.05", "12.9"),
        (GEFORCE, "580.95.05", "13.0"),
    ],
)
def test_auto_picks_the_newest_image_the_driver_starts(card, driver, picked):
    assert ng.nvidia_cuda_version(one(card, driver), "auto") == picked


@pytest.mark.parametrize(
    ("card", "driver", "needles"),
    [
        (DATA_CENTER, "470.256.02", ["CUDA 12.4 needs NVIDIA driver 525 or newer", "branch 525"]),
        (
            DATA_CENTER,
            "545.29.06",
            ["branch 470, 525 or 535 (its NVIDIA_REQUIRE_CUDA)", "545.29.06 is neither", "550"],
        ),
        (GEFORCE, "525.147.05", ["is not a data-center GPU", "branch 550 (CUDA 12.4)"]),
        (GEFORCE, "535.247.01", ["is not a data-center GPU", "or 580 (CUDA 13.0)"]),
    ],
)
def test_auto_refuses_a_driver_no_image_starts_on_and_names_the_fix(card, driver, needles):
    with pytest.raises(ng.AnsibleFilterError) as err:
        ng.nvidia_cuda_version(one(card, driver), "auto")
    message = str(err.value)
    assert f"NVIDIA driver {driver} runs none of the CUDA images" in message
    assert "Fix: upgrade the NVIDIA driver" in message
    assert "nvidia_toolkit_cuda_version: auto found nothing" in message
    for needle in needles:
        assert needle in message


def test_explicit_version_the_image_refuses_names_the_driver_and_a_version_that_starts():
    with pytest.raises(ng.AnsibleFilterError) as err:
        ng.nvidia_cuda_version(one(GEFORCE, "550.163.01"), "12.9")
    message = str(err.value)
    assert message.startswith("nvidia_toolkit_cuda_version is '12.9' but the nvidia/cuda 12.9")
    assert "NVIDIA GeForce RTX 3090 (GPU 0, compute capability 8.6) is not a data-center" in message
    assert "driver 550.163.01" in message
    assert "fix: set nvidia_toolkit_cuda_version: '12.4' (what auto picks)" in message
    assert "upgrade the NVIDIA driver to branch 575 or newer" in message


def test_explicit_version_on_an_unlisted_branch_asks_for_a_driver_upgrade():
    with pytest.raises(ng.AnsibleFilterError, match=r"545\.29\.06 is neither; fix: upgrade .*570"):
        ng.nvidia_cuda_version(one(HOPPER, "545.29.06"), "12.8")


def test_explicit_version_on_a_listed_branch_is_accepted_for_data_center_gpus():
    assert ng.nvidia_cuda_version(one(DATA_CENTER, "565.57.01"), "12.8") == "12.8"
    assert ng.nvidia_cuda_version(one(HOPPER, "570.172.08"), "12.9") == "12.9"


def test_one_geforce_among_data_center_gpus_holds_the_host_to_its_driver_version():
    # libnvidia-container checks NVIDIA_REQUIRE_CUDA for every visible GPU.
    gpus = ng.nvidia_gpus(
        rows(
            "0, Tesla T4, 7.5, 15360, 535.247.01",
            "1, NVIDIA GeForce RTX 4090, 8.9, 24564, 535.247.01",
        )
    )
    with pytest.raises(ng.AnsibleFilterError, match=r"GeForce RTX 4090 .* not a data-center GPU"):
        ng.nvidia_cuda_version(gpus, "auto")
    assert ng.nvidia_cuda_version(gpus[:1], "auto") == "12.9"


@pytest.mark.parametrize(
    "name", ["NVIDIA TITAN RTX", "TITAN Xp", "NVIDIA GeForce GTX 1080 Ti", "NVS 810"]
)
def test_consumer_and_nvs_cards_get_no_forward_compatibility(name):
    assert ng._native_only({"name": name})


@pytest.mark.parametrize(
    "name", ["Tesla P40", "NVIDIA L4", "NVIDIA A10", "NVIDIA RTX A6000", "Quadro RTX 8000"]
)
def test_data_center_and_professional_cards_do(name):
    assert not ng._native_only({"name": name})


def test_unknown_driver_is_not_held_against_the_image():
    gpus = [dict(g, driver_version="") for g in three_p40()]
    assert ng.nvidia_cuda_version(gpus, "auto") == "12.9"


def test_driver_tables_cover_every_cuda_version():
    versions = set(ng.CUDA_CAPABILITIES)
    assert set(ng.DRIVER_FOR_CUDA) == versions == set(ng.IMAGE_DRIVER_BRANCHES)
    # Every listed branch is older than the one that reports the version itself.
    for version, branches in ng.IMAGE_DRIVER_BRANCHES.items():
        assert max(branches) < ng.DRIVER_FOR_CUDA[version]
        assert ng.DRIVER_FOR_CUDA[version] >= ng.MIN_DRIVER_MAJOR[version.split(".")[0]]
