"""Reading result files: ``marble.results.read_result`` on N sealed, complete constrained results (13 hidden
states + the weighted sum x the card's LR grid, spread over the 14 tasks), validated with the compiled schema
validator (``fastjsonschema``; now) and with the interpretive ``jsonschema`` validator for every file (before).

    python bench/results_read.py [--n 1000] [--rounds 2]

The two ways alternate (A, B, A, B) in one process, so both see the same machine load; wall and process CPU time
per pass are printed. Every pass reads the same files from the page cache.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="result files to read per pass")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds")
    a = ap.parse_args()

    from marble.registry import all_cards
    from marble.results import read_result, result_path, write_result
    from marble.results import schema
    from tests.leaderboard_fixtures import complete_result

    cards = all_cards()
    tasks = sorted(cards)
    with tempfile.TemporaryDirectory(prefix="marble-bench-results-") as tmp:
        files = []
        for i in range(a.n):
            task = tasks[i % len(tasks)]
            p = result_path(tmp, f"bench/model-{i}", task, "constrained")
            write_result(p, complete_result(task, f"bench/model-{i}", num_states=13), cards=cards)
            files.append(p)
        size = sum(p.stat().st_size for p in files)
        print(f"{a.n} result files, {size / a.n / 1024:.1f} KiB each on average")

        compiled = schema.compiled_valid

        def read_all(fast: bool) -> tuple[float, float]:
            schema.compiled_valid = compiled if fast else (lambda result: False)  # False: every file through jsonschema
            t0, c0 = time.perf_counter(), time.process_time()
            for p in files:
                read_result(p, cards=cards)
            return time.perf_counter() - t0, time.process_time() - c0

        read_all(True)  # warm: compile the validator, fill the page cache
        for r in range(a.rounds):
            for label, fast in (("jsonschema (before)", False), ("compiled (now)", True)):
                wall, cpu = read_all(fast)
                print(f"round {r + 1} {label:<20} {a.n} files: wall {wall:7.2f} s, CPU {cpu:7.2f} s "
                      f"({1000 * cpu / a.n:.1f} ms CPU per file)")
        schema.compiled_valid = compiled


if __name__ == "__main__":
    main()
