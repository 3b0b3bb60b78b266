"""How much of a file this process holds resident through its mappings."""

from __future__ import annotations

from pathlib import Path


def resident_kb(path: Path) -> int:
    """This process's resident memory in mappings of `path`, per /proc/self/smaps."""
    resident, in_path = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            in_path = fields[-1] == str(path)
        elif in_path and fields[0] == "Rss:":
            resident += int(fields[1])
    return resident
