"""select_gpus: the GPUs the stack uses (localai_gpu_indexes), renumbered for docker."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import (
    engine_plan,
    select_gpus,
)

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_cap": "9.0", "memory_mib": 81559}
FOUR = [H100 | {"index": i} for i in range(4)]


def test_no_selection_keeps_every_gpu_unchanged():
    assert select_gpus(FOUR, []) == FOUR
    assert select_gpus(FOUR, None) == FOUR


def test_selected_gpus_are_renumbered_in_container_order():
    chosen = select_gpus(FOUR, [3, 1])
    # docker --gpus device=1,3 shows two GPUs, numbered 0 and 1 in nvidia-smi order.
    assert [(g["index"], g["host_index"]) for g in chosen] == [(0, 1), (1, 3)]
    assert all(g["memory_mib"] == 81559 for g in chosen)


def test_replicas_pin_to_the_container_numbers():
    models = [
        {
            "name": "chat",
            "alias": "gpt-3.5-turbo",
            "kind": "chat",
            "file": "chat.gguf",
            "src": "/srv/chat.gguf",
            "sha256": "a" * 64,
            "size_gb": 8.5,
        }
    ]
    gpus = select_gpus(FOUR, [2, 3])
    plan = engine_plan(models, "gpu", layout="replicas", gpus=gpus, stat_src=False)
    assert [e["gpu"] for e in plan] == [0, 1]


@pytest.mark.parametrize(
    ("gpus", "indexes", "expected"),
    [
        (FOUR, [7], "lists GPU 7, which this host does not have (GPUs here: 0, 1, 2, 3)"),
        ([], [0], "GPUs here: none (nvidia_toolkit found no NVIDIA GPU)"),
        (FOUR, [1, 1], "lists a GPU twice"),
        (FOUR, "0,1", "not a list of GPU indexes"),
        (FOUR, [-1], "not a list of GPU indexes"),
        (FOUR, [True], "not a list of GPU indexes"),
    ],
)
def test_bad_selection_names_the_variable_and_the_fix(gpus, indexes, expected):
    with pytest.raises(AnsibleFilterError) as err:
        select_gpus(gpus, indexes)
    assert "localai_gpu_indexes" in str(err.value)
    assert expected in str(err.value)
    assert "fix: list indexes from `nvidia-smi -L`" in str(err.value)
