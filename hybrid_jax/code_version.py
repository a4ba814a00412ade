"""Which code made a run: recorded in every workdir so that results of different code are never
compared as if they were one experiment.

    current()   {"commit": "<sha>", "dirty": bool[, "diff": "<fingerprint>"]} in a git checkout,
                {"version": "0.1.0"} (the installed distribution's) otherwise
    record(workdir, resumed=...)
                adds current() to workdir/code_version.json, which lists the distinct versions
                that worked on the run, in order of first use
    recorded(workdir)
                that list ([] when the file is absent)

"dirty" means uncommitted changes (or untracked files) under the package directory; "diff"
fingerprints them, so two different sets of edits on one commit are two versions.  Git is asked
with a short timeout; without git, or outside a checkout, the installed distribution's version
stands in.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import pathlib
import subprocess
from typing import Optional

FILE = "code_version.json"
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
GIT_TIMEOUT_S = 5.0
_IDENTITY = ("commit", "dirty", "diff", "version")


def _git(directory: pathlib.Path, *args: str) -> Optional[str]:
    """git's stdout, or None when git is absent, slow, or fails (not a checkout)."""
    try:
        r = subprocess.run(["git", "-C", str(directory), *args], capture_output=True,
                           timeout=GIT_TIMEOUT_S, env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"))
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.decode("utf-8", "replace") if r.returncode == 0 else None


def from_checkout(package_dir) -> Optional[dict]:
    """The commit and dirty state of the git checkout holding `package_dir`; None when the
    package is not tracked by one (a copy installed into site-packages inside some checkout is
    not that checkout's code)."""
    package_dir = pathlib.Path(package_dir)
    commit = _git(package_dir, "rev-parse", "HEAD")
    if not commit or _git(package_dir, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return None
    status = _git(package_dir, "status", "--porcelain", "--untracked-files=all", "--", ".")
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if status is None or top is None:
        return None
    version = {"commit": commit.strip(), "dirty": bool(status.strip())}
    if version["dirty"]:
        # Staged or not, the same edits are the same code: the diff against HEAD, plus the
        # untracked files it does not show.
        diff = _git(package_dir, "diff", "HEAD", "--binary", "--", ".") or ""
        h = hashlib.sha256(diff.encode())
        for line in sorted(status.splitlines()):
            path = pathlib.Path(top.strip(), line[3:].strip('"'))
            if line.startswith("?? ") and path.is_file():
                h.update(line[3:].encode() + b"\0" + path.read_bytes())
        version["diff"] = h.hexdigest()[:12]
    return version


def from_metadata(distribution: str = "hybrid_jax") -> dict:
    from importlib import metadata

    try:
        return {"version": metadata.version(distribution)}
    except metadata.PackageNotFoundError:
        return {"version": "unknown"}


@functools.lru_cache(maxsize=None)
def _current() -> str:  # cached as text: callers get copies they may change
    return json.dumps(from_checkout(PACKAGE_DIR) or from_metadata())


def current() -> dict:
    """This process's code version (asked once)."""
    return json.loads(_current())


def identity(version: dict) -> dict:
    """The fields that make two versions the same code (not when they were recorded)."""
    return {k: version[k] for k in _IDENTITY if k in version}


def same(a: dict, b: dict) -> bool:
    return identity(a) == identity(b)


def label(version: dict) -> str:
    """'git 1a2b3c4d5e6f', 'git 1a2b3c4d5e6f+dirty(diff 0123abcd4567)', 'hybrid_jax 0.1.0'."""
    if "commit" in version:
        dirty = f"+dirty(diff {version.get('diff', '?')})" if version.get("dirty") else ""
        return f"git {version['commit'][:12]}{dirty}"
    return f"hybrid_jax {version.get('version', 'unknown')}"


def recorded(workdir) -> list[dict]:
    path = pathlib.Path(workdir) / FILE
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("versions", []))


def record(workdir, *, resumed: bool, version: Optional[dict] = None) -> dict:
    """Adds `version` (default: current()) to workdir/code_version.json unless it is there
    already; returns it.  `resumed`: the run continues from a checkpoint of this workdir; when
    it starts afresh, versions recorded by earlier attempts made nothing that survives and are
    dropped."""
    version = identity(version or current())
    versions = recorded(workdir) if resumed else []
    if not any(same(v, version) for v in versions):
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        versions.append(dict(version, label=label(version), first_recorded=stamp))
        path = pathlib.Path(workdir) / FILE
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"versions": versions}, indent=1))
        os.replace(tmp, path)
    return version
