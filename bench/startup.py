"""Start-up time of the installed `sessionctl` against `python -c "import typer"`.

    .venv/bin/python bench/startup.py [--runs 20]

`sessionctl --help` and `sessionctl --version` should cost little more than importing Typer:
they load no store driver, no core operation and no Rich (tests/test_startup.py checks the
imports; this measures the time). A real command, `stats` on an empty JSON store, is measured
too, and `import typer._adapters`: the Pydantic that Typer 0.29 loads as soon as it coerces a
command's parameters (any command but a bare --help or --version). Each command runs --runs times after one warm-up round, the
commands interleaved; the median wall time is reported, and its ratio to `import typer` and to a bare interpreter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
SESSIONCTL = BIN / "sessionctl"


def medians(cases: dict[str, list[str]], runs: int) -> dict[str, float]:
    """Median wall time of each command; runs interleaved, so background load hits all alike."""
    env = {**os.environ, "NO_COLOR": "1", "SESSIONCTL_STATE_DIR": tempfile.mkdtemp()}
    for name in ("SESSIONCTL_CONFIG", "SESSIONCTL_STORE", "SESSIONCTL_FORMAT"):
        env.pop(name, None)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(runs + 1):
        for name, argv in cases.items():
            started = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
            if round_:  # the first round only warms the caches
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if not SESSIONCTL.exists():
        print(f"{SESSIONCTL} not found: run this with the venv's python", file=sys.stderr)
        return 2
    empty = Path(tempfile.mkdtemp()) / "empty.json"
    empty.write_text("[]\n")
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import typer"': [sys.executable, "-c", "import typer"],
        "import typer + its pydantic": [sys.executable, "-c", "import typer._adapters"],
        "sessionctl stats (empty store)": [
            str(SESSIONCTL),
            "stats",
            "-s",
            str(empty),
            "-f",
            "json",
        ],
        "sessionctl --help": [str(SESSIONCTL), "--help"],
        "sessionctl --version": [str(SESSIONCTL), "--version"],
        "sessionctl presets -f json": [str(SESSIONCTL), "presets", "-f", "json"],
    }
    results = medians(cases, args.runs)
    bare = results["python -c pass"]
    typer = results['python -c "import typer"']
    print(f"median of {args.runs} runs each ({sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    print(f"{'command':<28} {'ms':>7} {'/ import typer':>15} {'/ bare python':>14}")
    for name, seconds in results.items():
        print(f"{name:<28} {seconds * 1000:>7.1f} {seconds / typer:>15.2f} {seconds / bare:>14.2f}")
    net_help = (results["sessionctl --help"] - bare) / (typer - bare)
    net_version = (results["sessionctl --version"] - bare) / (typer - bare)
    print(
        f"\nabove the bare interpreter: --help costs {net_help:.2f}x and --version "
        f"{net_version:.2f}x what `import typer` costs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
