"""The model thread gives way: it and the torch threads it starts run at a lower priority."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from phi3_lsp.model_thread import ModelThread
from phi3_lsp.scheduling import cores_in_cpuinfo, physical_cores

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="nice values are per thread on Linux only"
)


def thread_nice(thread_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread_id)


def nice_values_of_this_process() -> dict[int, int]:
    """Every thread of this process, by native id, with its nice value."""
    return {
        int(task.name): thread_nice(int(task.name)) for task in Path("/proc/self/task").iterdir()
    }


def expected_nice() -> int:
    """10 above the server's thread: the server gets ~90 % of a core both want."""
    own = thread_nice(threading.get_native_id())
    if own >= 19:
        pytest.skip("this process runs at the lowest priority already: nothing can be lower")
    return min(19, own + 10)


def test_model_jobs_run_at_a_lower_priority_than_the_server() -> None:
    own = thread_nice(threading.get_native_id())
    model_thread = ModelThread()
    try:
        assert (
            model_thread.submit(lambda: thread_nice(threading.get_native_id())).result(timeout=10)
            == expected_nice()
        )
    finally:
        model_thread.shutdown()
    assert thread_nice(threading.get_native_id()) == own


def test_torch_threads_started_by_the_model_thread_run_at_its_priority() -> None:
    import torch

    def run_on_two_threads() -> tuple[int, dict[int, int]]:
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            matrix = torch.ones(512, 512)
            for _ in range(3):
                matrix @ matrix
        finally:
            torch.set_num_threads(before)
        return threading.get_native_id(), nice_values_of_this_process()

    threads_before = set(nice_values_of_this_process())
    model_thread = ModelThread()
    try:
        model_thread_id, nice_values = model_thread.submit(run_on_two_threads).result(timeout=60)
    finally:
        model_thread.shutdown()
    started = set(nice_values) - threads_before - {model_thread_id}
    assert started, "torch started no thread for a product on 2 threads"
    assert {nice_values[thread_id] for thread_id in started} == {expected_nice()}


def test_physical_cores_is_within_the_logical_count() -> None:
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def cpuinfo(*cores: tuple[int, int]) -> str:
    """A `/proc/cpuinfo` text with one entry per logical CPU, each on (physical id, core id)."""
    return "\n".join(
        f"processor\t: {number}\nphysical id\t: {physical}\ncore id\t\t: {core}\n"
        for number, (physical, core) in enumerate(cores)
    )


def test_hyper_threads_of_one_core_count_once() -> None:
    # 2 sockets of 2 cores, each core with 2 hyper-threads: 8 logical CPUs.
    two_sockets = cpuinfo(
        *[(socket, core) for _ in range(2) for socket in (0, 1) for core in (0, 1)]
    )
    assert cores_in_cpuinfo(two_sockets) == 4
    assert cores_in_cpuinfo(cpuinfo((0, 0), (0, 1))) == 2


def test_a_cpuinfo_without_cores_names_none() -> None:
    assert cores_in_cpuinfo("processor\t: 0\nmodel name\t: virtual CPU\n\nprocessor\t: 1\n") is None
