"""Runs per hour of one grid: the local sweep against a Ray cluster of this machine with 1
and 2 workers: the engine's overhead; prints a table (not a test).

    .venv/bin/python benchmarks/cluster.py                 # 12 tiny-sd15 runs to 512², CPU
    .venv/bin/python benchmarks/cluster.py --runs 40 --model realistic-vision-v6 --target 2048

Each way runs `pegu sweep` in a fresh process into a fresh folder, from start to table
(starting Ray, its workers loading the models, the driver writing rows and images), so the
figure is what a user waits for. On a CPU every worker gets as many torch threads as the
local sweep (so that the pixels are the same): two workers on a 2-core machine share the
cores, and the table shows what the engine costs rather than a speed-up; on a cluster of
GPUs each worker has its own GPU.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny-sd15")
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--target", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args(argv)
    import yaml

    pegu = str(Path(sys.executable).parent / "pegu")
    work = Path(tempfile.mkdtemp(prefix="pegu-cluster-bench-"))
    grid = work / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "base": {"model": args.model, "target": [args.target, args.target],
                 "generate": {"steps": args.steps},
                 "upscale": {"model": "realesr-animevideov3"}},
        "prompts": ["RAW photo, portrait of an old fisherman"],
        "seeds": list(range(args.runs))}))
    env = dict(os.environ, RAY_AUTH_MODE="disabled")  # a throwaway local cluster
    ways = [("local sweep", []), ("Ray, 1 worker", ["--cluster", "ray", "--workers", "1"]),
            ("Ray, 2 workers", ["--cluster", "ray", "--workers", "2"])]
    print(f"{args.runs} runs of {args.model}, {args.steps} steps, to {args.target}², on "
          f"{os.cpu_count()} CPUs ({time.strftime('%Y-%m-%d')})")
    print(f"{'way':16} {'wall s':>8} {'runs/hour':>10} {'vs local':>9}")
    base = None
    for name, extra in ways:
        out = work / name.replace(" ", "_").replace(",", "")
        t0 = time.perf_counter()
        r = subprocess.run([pegu, "sweep", "--grid", str(grid), "--out", str(out), "--no-clip",
                            "--no-progress", *extra], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            print(f"{name:16} failed: {r.stderr.strip().splitlines()[-1:]}")
            continue
        base = base or wall
        print(f"{name:16} {wall:8.1f} {args.runs / wall * 3600:10.0f} {base / wall:8.2f}x")


if __name__ == "__main__":
    main()
