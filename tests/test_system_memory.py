"""How much memory the server may still take: the system's, or its control group's if less."""

from __future__ import annotations

from pathlib import Path

from phi3_lsp.system_memory import available_memory

GB = 10**9
MEMINFO = "MemTotal:       24683584 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n"
"""20.48 GB available."""


def fake_proc(root: Path, cgroup: str, mountinfo: str, meminfo: str = MEMINFO) -> Path:
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(meminfo)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    return proc


def write_group(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_without_a_memory_limit_the_systems_available_memory_counts(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    write_group(mount / "user.slice", {"memory.max": "max\n", "memory.current": "123\n"})
    proc = fake_proc(
        tmp_path, "0::/user.slice\n", f"40 31 0:38 / {mount} rw - cgroup2 cgroup2 rw\n"
    )
    assert available_memory(proc) == 20_000_000 * 1024


def test_a_cgroup_v2_limit_leaves_room_for_what_the_group_cannot_drop(tmp_path: Path) -> None:
    # A container limited to 4 GB uses 3 GB, of which 1 GB is page cache it would drop first.
    mount = tmp_path / "cgroup"
    write_group(
        mount / "app",
        {
            "memory.max": f"{4 * GB}\n",
            "memory.current": f"{3 * GB}\n",
            "memory.stat": f"anon {2 * GB}\ninactive_file {GB}\n",
        },
    )
    proc = fake_proc(tmp_path, "0::/app\n", f"40 31 0:38 / {mount} rw - cgroup2 cgroup2 rw\n")
    assert available_memory(proc) == 2 * GB


def test_a_cgroup_v1_limit_set_on_a_parent_group_counts(tmp_path: Path) -> None:
    mount = tmp_path / "memory"
    write_group(
        mount / "service",
        {
            "memory.limit_in_bytes": "9223372036854771712\n",  # no limit of its own
            "memory.usage_in_bytes": f"{GB}\n",
            "memory.stat": "total_inactive_file 0\n",
        },
    )
    write_group(
        mount,
        {
            "memory.limit_in_bytes": f"{3 * GB}\n",
            "memory.usage_in_bytes": f"{2 * GB}\n",
            "memory.stat": f"total_inactive_file {GB // 2}\n",
        },
    )
    proc = fake_proc(
        tmp_path,
        "5:cpu,cpuacct:/service\n4:memory:/service\n0::/\n",
        f"32 31 0:29 / {tmp_path}/cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
        f"35 31 0:32 / {mount} rw - cgroup cgroup rw,memory\n",
    )
    assert available_memory(proc) == 3 * GB - (2 * GB - GB // 2)


def test_a_limit_above_the_systems_memory_leaves_the_systems_figure(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    write_group(mount, {"memory.max": f"{64 * GB}\n", "memory.current": f"{GB}\n"})
    proc = fake_proc(tmp_path, "0::/\n", f"40 31 0:38 / {mount} rw - cgroup2 cgroup2 rw\n")
    assert available_memory(proc) == 20_000_000 * 1024


def test_nothing_readable_means_unknown(tmp_path: Path) -> None:
    assert available_memory(tmp_path / "no-proc") is None


def test_this_machine_reports_what_its_memory_allows() -> None:
    available = available_memory()
    total_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    assert available is not None and 0 < available <= total_kb * 1024
