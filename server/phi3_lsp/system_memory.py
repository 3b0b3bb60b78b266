"""How much memory this process can still take: the system's, or its control group's if less.

A model that does not fit is not refused by anything when it loads: Linux lets the process
grow until the out-of-memory killer ends it, and the editor then restarts the server to be
killed again. So the load asks first. The system's share is `MemAvailable` (free memory plus
caches the kernel can drop); a container's or a service's limit is its control group's
(cgroup v1 or v2), less what the group uses beyond caches it can drop. Swap is not counted: a
model read from swap answers in minutes, not milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_UNLIMITED = 1 << 62
"""cgroup v1 reports "no limit" as a huge number (the largest page-aligned 64-bit value)."""


@dataclass(frozen=True)
class _CgroupFiles:
    """File names of one cgroup version's memory controller."""

    limit: str
    usage: str
    inactive_file: str
    """The `memory.stat` key of page cache the kernel can drop first."""


_V1 = _CgroupFiles("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
_V2 = _CgroupFiles("memory.max", "memory.current", "inactive_file")


def available_memory(proc: Path = PROC) -> int | None:
    """Bytes this process can still allocate without swapping or being killed; None if unknown
    (not Linux)."""
    known = [room for room in (_system_available(proc), _cgroup_room(proc)) if room is not None]
    return min(known) if known else None


def _system_available(proc: Path) -> int | None:
    try:
        lines = (proc / "meminfo").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            return int(value.split()[0]) * 1024  # the value is in kB
    return None


def _cgroup_room(proc: Path) -> int | None:
    """The least room left under the memory limit of this process's cgroup or its ancestors."""
    found = _memory_cgroup_dir(proc)
    if found is None:
        return None
    directory, mount_point, files = found
    rooms = []
    while True:
        limit = _read_limit(directory / files.limit)
        if limit is not None:
            rooms.append(max(0, limit - _working_set(directory, files)))
        if directory == mount_point or directory.parent == directory:
            break
        directory = directory.parent
    return min(rooms) if rooms else None


def _memory_cgroup_dir(proc: Path) -> tuple[Path, Path, _CgroupFiles] | None:
    """This process's memory cgroup folder, the mount it is under, and its version's files."""
    try:
        memberships = (proc / "self" / "cgroup").read_text(encoding="utf-8").splitlines()
        mounts = (proc / "self" / "mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for membership in memberships:
        # "hierarchy-id:controllers:path"; cgroup v2 has id 0 and no controllers listed.
        hierarchy, controllers, path = membership.split(":", 2)
        if "memory" in controllers.split(","):
            files, mount = _V1, _find_mount(mounts, "cgroup", "memory")
        elif hierarchy == "0" and not controllers:
            files, mount = _V2, _find_mount(mounts, "cgroup2", None)
        else:
            continue
        if mount is None:
            continue
        mount_root, mount_point = mount
        relative = Path(path).relative_to(mount_root) if path.startswith(mount_root) else Path()
        directory = mount_point / relative
        if directory.is_dir():
            return directory, mount_point, files
    return None


def _find_mount(mounts: list[str], fs_type: str, option: str | None) -> tuple[str, Path] | None:
    """(root within the hierarchy, mount point) of the first mount of `fs_type` with `option`."""
    for mount in mounts:
        # "id parent dev root mount-point options [optional...] - fs-type source super-options"
        fields, _, tail = mount.partition(" - ")
        parts, tail_parts = fields.split(), tail.split()
        if len(parts) < 5 or len(tail_parts) < 3 or tail_parts[0] != fs_type:
            continue
        if option is None or option in tail_parts[2].split(","):
            return parts[3], Path(parts[4])
    return None


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    if text == "max" or not text.isdigit() or int(text) >= _UNLIMITED:
        return None
    return int(text)


def _working_set(directory: Path, files: _CgroupFiles) -> int:
    """What the cgroup uses, less the page cache it would drop first (as `docker stats` counts)."""
    try:
        usage = int((directory / files.usage).read_text(encoding="ascii"))
        stats = (directory / "memory.stat").read_text(encoding="ascii").splitlines()
    except (OSError, ValueError):
        return 0
    for line in stats:
        key, _, value = line.partition(" ")
        if key == files.inactive_file:
            return max(0, usage - int(value))
    return usage
