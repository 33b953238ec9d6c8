"""The service must never load training libraries: the serving image does not install them."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_service_loads_no_training_library() -> None:
    code = (
        "import sys, service.app, service.api, service.ranking, service.store\n"
        "banned = ('implicit', 'lightfm', 'scipy', 'pyarrow', 'training')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in banned))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
