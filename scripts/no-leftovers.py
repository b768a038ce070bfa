#!/usr/bin/env python3
"""Runs a command and fails if any process it started is still alive when it ends.

    python3 scripts/no-leftovers.py -- make test-steps

This process becomes a child subreaper (Linux prctl PR_SET_CHILD_SUBREAPER), so every process
the command starts stays its descendant even after its own parent exits (a server started in a
`$(...)` subshell, a daemonised child). When the command has exited, each descendant still
alive after a short grace is reported with its command line and killed, and the exit status is
non-zero: a test run must leave nothing behind. Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
# Processes being killed by an exit trap may take a moment to go; anything alive after this is
# a leftover.
GRACE_SECONDS = 5.0


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        sys.exit(f"no-leftovers: prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(err)}")


def reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is gone already; reap_zombies collects ours
        return None
    return int(fields[1])


def descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = parent_of(int(entry.name))
            if ppid is not None:
                parents[int(entry.name)] = ppid
    found: list[int] = []
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier}
        found.extend(sorted(children))
        frontier = children
    return found


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.exit("usage: no-leftovers.py -- COMMAND [ARGS...]")
    become_subreaper()
    rc = subprocess.call(argv)
    deadline = time.monotonic() + GRACE_SECONDS
    left = descendants(os.getpid())
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        reap_zombies()
        left = descendants(os.getpid())
    if not left:
        print("no-leftovers: no process of the run is still alive")
        return rc
    print(f"no-leftovers: {len(left)} process(es) started by the run are still alive:", file=sys.stderr)
    for pid in left:
        print(f"  {pid}: {cmdline(pid)}", file=sys.stderr)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
    reap_zombies()
    return rc or 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
