"""The stages that set the host up: the dry run's bundle, the wheel install, the environment
check and the data archive."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tarfile

from benchmarks.accelerator_check.bundle import (DATA_ARCHIVE, DATA_SETS, MANIFEST, WHEELS_DIR,
                                            plan_install, prepare, wheel_name_version)
from benchmarks.accelerator_check.files import sha256
from benchmarks.accelerator_check.runner import Runner


class SetupStages(Runner):
    """prepare, install, env and data: each `do_<stage>(limit_s) -> figures`."""

    def do_prepare(self, limit: float) -> dict:
        # The dry run's bundle: the real one's layout, two languages, no wheels or pack.
        self.bundle = self.work / "bundle"
        try:
            m = prepare(self.bundle, pathlib.Path(self.args.data_root), languages=["en", "de"],
                        model=False, wheels_required=False, log=self.say)
        except SystemExit as e:  # prepare's command-line errors: here a failed stage
            raise RuntimeError(str(e).removeprefix("error: ")) from None
        return {"data_bytes": m["data"]["bytes"], "bundle": str(self.bundle)}

    def do_install(self, limit: float) -> dict:
        wheels = sorted(str(w) for w in (self.bundle / WHEELS_DIR).glob("*.whl"))
        if not wheels:
            return {"status": "skipped", "error": f"no wheels in {self.bundle / WHEELS_DIR}"}
        probe = ("import importlib.metadata as m, json, sys\n"
                 "out = {}\n"
                 "for n in sys.argv[1:]:\n"
                 "    try: out[n] = m.version(n)\n"
                 "    except m.PackageNotFoundError: out[n] = None\n"
                 "print(json.dumps(out))")
        names = [wheel_name_version(w)[0] for w in wheels]
        env = self.child_env()
        env.pop("PYTHONPATH", None)  # what the host itself has, not our site folder
        r = subprocess.run([sys.executable, "-c", probe, *names], capture_output=True, text=True,
                           env=env, timeout=limit)
        if r.returncode != 0:
            raise RuntimeError(f"reading installed versions failed: {r.stderr.strip()[-300:]}")
        installed = json.loads(r.stdout)
        todo, skipped = plan_install(wheels, installed)
        figures = {"installed_before": installed, "skipped": skipped,
                   "installing": [pathlib.Path(w).name for w in todo]}
        if not todo:
            figures["status"] = "skipped"
            figures["error"] = "every package of the bundle is already installed"
            return figures
        self.site.mkdir(parents=True, exist_ok=True)
        rc, timed_out = self.child([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                                    "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
                                    "--target", str(self.site), *todo], limit, env)
        if timed_out or rc != 0:
            figures.update(status="timeout" if timed_out else "failed",
                           error=f"pip install: status {rc}")
        figures["site"] = str(self.site)
        return figures

    def do_env(self, limit: float) -> dict:
        result, rc, timed_out = self.worker("env", {}, limit)
        if result is None:
            return {"status": "timeout" if timed_out else "failed",
                    "error": f"env worker: status {rc}"}
        self.facts["devices"] = int(result.get("device_count") or 1)
        expected = "cpu" if self.dry else self.args.backend
        bad_imports = {k: v for k, v in result.get("imports", {}).items() if v != "ok"}
        if result.get("backend") != expected:
            result.update(status="failed", error=f"jax backend is {result.get('backend')!r}, "
                                                 f"not {expected!r}")
            self.facts["wrong_backend"] = True
        elif bad_imports:
            result.update(status="failed", error=f"imports failed: {sorted(bad_imports)}")
        elif not result.get("matmul_ok"):
            result.update(status="failed",
                          error="a bfloat16 matmul on the accelerator gave a wrong sum")
        return result

    def do_data(self, limit: float) -> dict:
        archive = self.bundle / DATA_ARCHIVE
        if not archive.is_file():
            raise FileNotFoundError(f"{archive}: no data archive (make offline-bundle)")
        manifest_path = self.bundle / MANIFEST
        want = json.loads(manifest_path.read_text())["data"]["sha256"] \
            if manifest_path.is_file() else None
        got = sha256(archive)
        if want and got != want:  # a copy cut short, or an archive rebuilt without its manifest
            raise RuntimeError(f"{archive}: sha256 {got[:12]} differs from manifest {want[:12]}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(self.data_dir, **kw)
        files = list(self.data_dir.rglob("*.json"))
        missing = [n for n in DATA_SETS if not (self.data_dir / n).is_dir()]
        if missing:
            raise RuntimeError(f"{archive}: no {missing} folder inside")
        return {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
                "sha256_checked": bool(want)}
