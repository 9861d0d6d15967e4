"""``import distengine`` on top of ``import torch``: what the library adds to start-up.

Run: ``python benchmarks/import_time.py``
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

RUNS = 7
CASES = {
    "import torch": "import torch",
    "+ distengine (engine, metrics, handlers, distributed)": (
        "import torch, distengine.engine, distengine.metrics, distengine.handlers, "
        "distengine.distributed"
    ),
    "+ ignite (engine, metrics, handlers)": (
        "import torch, ignite.engine, ignite.metrics, ignite.handlers"
    ),
}
HEAVY = ("tensorboard", "tqdm", "hydra", "sklearn")


def timed(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    import importlib.util

    cases = {
        k: v for k, v in CASES.items() if "ignite" not in k or importlib.util.find_spec("ignite")
    }
    times = {name: [] for name in cases}
    for _ in range(RUNS):
        for name, code in cases.items():
            times[name].append(timed(code))
    check = (
        "import sys, torch; before = set(sys.modules); import distengine.engine, "
        "distengine.metrics, distengine.handlers, distengine.distributed; "
        f"print([m for m in {HEAVY!r} if m in sys.modules and m not in before])"
    )
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stdout
    base = statistics.median(times["import torch"])
    print(f"# Import time ({machine()}; median of {RUNS} fresh interpreters)")
    print("| import | seconds | added to torch |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median - base:+.2f} |")
    print(f"\nHeavy modules that `import distengine.*` adds to torch's: {loaded.strip()}")


if __name__ == "__main__":
    main()
