"""How torch's threads wait between parallel regions: briefly, unless the user said otherwise."""

from __future__ import annotations

import pytest

from phi3_lsp.openmp import configure_waiting


def test_idle_threads_wait_about_a_millisecond_in_either_openmp_runtime() -> None:
    environ: dict[str, str] = {"PATH": "/usr/bin"}
    configure_waiting(environ)
    assert environ == {
        "PATH": "/usr/bin",
        # libgomp spins ~1 ms, LLVM/Intel OpenMP waits 1 ms: no core kept busy after a request
        "GOMP_SPINCOUNT": "30000",
        "KMP_BLOCKTIME": "1",
    }


@pytest.mark.parametrize(
    "choice",
    [{"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "0"}, {"KMP_BLOCKTIME": "200"}],
)
def test_a_wait_policy_the_user_set_is_kept(choice: dict[str, str]) -> None:
    environ = dict(choice)
    configure_waiting(environ)
    assert environ == choice
