"""Every module of the service, the training job and the benchmarks imports on its own, first.

A circular import shows only when a module is the first of its cycle to be imported: the
service imports ``service.api`` first and ran, while ``import service.schemas`` alone failed
(``schemas`` -> ``api.params`` -> ``api`` -> ``api.customers`` -> ``schemas``), and with it
``python -m benchmarks.hot_path``. Each module is imported in a child process forked from one
that has loaded only third-party libraries, so a child pays for our modules alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILDREN = r"""
import importlib, os, sys
import litestar, msgspec, numpy, pyarrow, redis, scipy, uvicorn  # third-party only
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
sys.exit(1 if failed else 0)
"""


def modules(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_each_module_imports_first_in_a_process() -> None:
    names = modules("service") + modules("training") + modules("benchmarks")
    assert "service.schemas" in names and "training.pipeline" in names
    run = subprocess.run(
        [sys.executable, "-c", CHILDREN, *names], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
