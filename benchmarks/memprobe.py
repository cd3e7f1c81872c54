"""Where the operator's memory goes: `flagops run` under tracemalloc, the snapshot taken at its
largest traced size reported by file at exit (to $FLAGOPS_MEMPROBE_OUT, else stderr).

    python benchmarks/memprobe.py run [flagops run options]

Used by `benchmarks/run.py scale --memprobe`; a development harness, not shipped.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc

from flagops import cli


def _watch(best: list[tracemalloc.Snapshot | None], size: list[int]) -> None:
    while True:
        time.sleep(1.0)
        current, _ = tracemalloc.get_traced_memory()
        if current > size[0]:
            size[0] = current
            best[0] = tracemalloc.take_snapshot()


def main() -> int:
    tracemalloc.start(1)
    best: list[tracemalloc.Snapshot | None] = [None]
    size = [0]
    threading.Thread(target=_watch, args=(best, size), daemon=True).start()
    try:
        return cli.main(sys.argv[1:])
    finally:
        if best[0] is not None:
            lines = [f"largest traced: {size[0] / 2**20:.1f} MiB; by file:"]
            for stat in best[0].statistics("filename")[:25]:
                lines.append(f"  {stat.size / 2**20:7.1f} MiB  {stat.count:8d} blocks  {stat.traceback}")
            out = os.environ.get("FLAGOPS_MEMPROBE_OUT")
            if out:
                with open(out, "w") as report:
                    report.write("\n".join(lines) + "\n")
            else:
                print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
