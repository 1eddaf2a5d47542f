"""Build this crate from a copy of it at a fixed path, so that cargo's cache outlives the checkout it was built from.

cargo takes a path crate for stale when one of its files is newer than the crate's last build. A fresh clone (`.ci/run`
clones main anew each time) and `sam build`'s scratch copy give every file a new mtime, so each of a CI run's three
builds of the core recompiled it although no byte had changed. The mirror keeps a file, and its mtime, while its
content is unchanged and rewrites it when the content changed, so the sources' mtimes no longer make cargo rebuild.
(The venv's path would too; the Makefile and pyproject.toml keep it out: see the README.)

    python mirror.py INTO -- COMMAND [ARG ...]

copies this crate (without `target/`, `fuzz/` and hidden files) into INTO, removes what is no longer in it, and runs
COMMAND with each `{}` in its arguments replaced by INTO, holding a lock on INTO for both (two builds at once would
otherwise sync over each other). Its exit status is COMMAND's.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

CRATE = Path(__file__).resolve().parent
SKIPPED = {"target", "fuzz", "__pycache__"}


def _files(root: Path) -> dict[str, Path]:
    """Relative path -> file, for every file of the crate the build reads."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED and not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                path = Path(folder) / name
                found[path.relative_to(root).as_posix()] = path
    return found


def sync(crate: Path, into: Path) -> list[str]:
    """Makes ``into`` hold the crate's files; the relative paths written or removed (unchanged files keep their
    mtime)."""
    source = _files(crate)
    present = _files(into) if into.is_dir() else {}
    changed = []
    for relative, path in sorted(source.items()):
        body = path.read_bytes()
        target = into / relative
        if relative in present and target.read_bytes() == body:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(body)
        os.replace(partial, target)
        changed.append(relative)
    for relative in sorted(present.keys() - source.keys()):
        (into / relative).unlink()
        changed.append(relative)
    return changed


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python mirror.py INTO -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    into = Path(argv[0]).resolve()
    if into == CRATE or into.is_relative_to(CRATE):
        print(f"mirror.py: {into} is inside the crate it mirrors", file=sys.stderr)
        return 2
    into.parent.mkdir(parents=True, exist_ok=True)
    with open(into.with_name(f"{into.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        changed = sync(CRATE, into)
        print(f"mirror.py: {into}: {len(changed)} file(s) changed", file=sys.stderr)
        command = [arg.replace("{}", str(into)) for arg in argv[2:]]
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
