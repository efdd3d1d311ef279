"""Cold-process search from the shell: ``sightline search`` side by side with rclip.

    python benchmarks/cli_search.py --peers             # rclip and Sightline alternately, 5 runs each
    python benchmarks/cli_search.py --peers --runs 9 --torch   # also Sightline's torch path (--no-onnx)

Each run starts a new process, as a user's shell does, and times it to its
exit (wall clock) with its peak resident memory (the kernel's own maximum,
``wait4``).  The same query runs for every tool: a text query, then an image
query (the file's path for rclip, ``--image`` for Sightline).  Tools take
turns within each run, so machine load falls on both alike; medians, spreads
(min–max) and ratios are printed, and whether the issue's targets are met.

Both search the harness's 500 photos with the same random ViT-B-32 @224
(``$PEERS_DIR``, see ``../shared/bench-peers/README.md``): Sightline's index
is built once under ``--workdir`` (``sightline index``, which also makes the
ONNX export), rclip's datadir too (its first query indexes the folder).
Wrap it in ``flock /tmp/sightline-bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import default_checkpoint, default_photos, peers_dir, require, spread, table  # noqa: E402

TEXT_QUERY = "a cup of coffee on a table"
K = 10


def run_cold(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Wall time of one process from start to exit, and its peak RSS (ru_maxrss from wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "stdout": out.decode(), "stderr": err.decode()}


# ------------------------------------------------------------------ set-up
def sightline_index(workdir: Path, photos: Path, checkpoint: Path, fresh: bool) -> Path:
    index = workdir / "sightline-index"
    if fresh and index.exists():
        shutil.rmtree(index)
    if not (index / "onnx").is_dir():
        cmd = [sys.executable, "-m", "sightline", "index", str(photos), "--index", str(index), "--model", "ViT-B-32",
               "--pretrained", str(checkpoint), "--json"]
        done = run_cold(cmd, REPO, dict(os.environ, HF_HUB_OFFLINE="1"))
        report = json.loads(done["stdout"])
        print(f"sightline index: {report['indexed']} photos in {done['wall_s']:.1f} s (incl. the ONNX export: "
              f"{report.get('onnx_export_s')} s)", file=sys.stderr)
    return index


def rclip_setup(workdir: Path, photos: Path) -> tuple[list[str], dict]:
    """rclip's 224 px variant over its own datadir (indexed on first use), as run_rclip.sh runs it."""
    peers = peers_dir()
    venv_python = require(peers / "rclip-venv" / "bin" / "python", "rclip's virtualenv")
    models = require(peers / "models" / "rclip-data-224", "rclip's 224 px ONNX models")
    datadir = workdir / "rclip-datadir"
    datadir.mkdir(parents=True, exist_ok=True)
    for name in ("ViT-B-32-256-datacomp_s34b_b86k", "tokenizer"):
        if not (datadir / name).exists():
            (datadir / name).symlink_to(models / name)
    cmd = [str(venv_python), str(require(peers / "lib" / "rclip224.py", "lib/rclip224.py"))]
    env = dict(os.environ, RCLIP_DATADIR=str(datadir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not (datadir / "db.sqlite3").exists():
        done = run_cold(cmd + ["-f", "-t", "1", "a photo"], photos, env)
        print(f"rclip index: {done['wall_s']:.1f} s", file=sys.stderr)
    return cmd, env


# --------------------------------------------------------------- the runs
def commands(args, index: Path, rclip_cmd: list[str], image: Path) -> dict:
    sightline = [sys.executable, "-m", "sightline", "search", "--index", str(index), "-k", str(K)]
    tools = {
        ("text", "rclip"): rclip_cmd + ["-n", "-f", "-t", str(K), TEXT_QUERY],
        ("text", "sightline"): sightline + [TEXT_QUERY],
        ("image", "rclip"): rclip_cmd + ["-n", "-f", "-t", str(K), str(image)],
        ("image", "sightline"): sightline + ["--image", str(image)],
    }
    if args.torch:
        tools[("text", "sightline torch")] = sightline + ["--no-onnx", TEXT_QUERY]
        tools[("image", "sightline torch")] = sightline + ["--no-onnx", "--image", str(image)]
    return tools


def results_of(tool: str, stdout: str) -> list[str]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [line.split("  ", 1)[1] if tool.startswith("sightline") else line for line in lines]


def measure(args, tools: dict, photos: Path, rclip_env: dict) -> dict:
    sightline_env = dict(os.environ, HF_HUB_OFFLINE="1")
    samples: dict = {key: [] for key in tools}
    for run in range(args.runs):
        for key, cmd in tools.items():
            cwd, env = (photos, rclip_env) if key[1] == "rclip" else (REPO, sightline_env)
            done = run_cold(cmd, cwd, env)
            found = results_of(key[1], done["stdout"])
            if len(found) != K:
                raise SystemExit(f"{key[1]} answered {len(found)} results, not {K}:\n{done['stdout']}{done['stderr']}")
            samples[key].append(done)
        print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{k[0]} {k[1]} {v[-1]['wall_s']:.2f} s"
                                                    for k, v in samples.items()), file=sys.stderr)
    return samples


def report(samples: dict) -> dict:
    rows, summary = [], {}
    for (kind, tool), runs in samples.items():
        walls = [r["wall_s"] for r in runs]
        mems = [r["peak_rss_mib"] for r in runs]
        rclip = samples.get((kind, "rclip"))
        ratio = statistics.median(walls) / statistics.median(r["wall_s"] for r in rclip) if rclip else None
        summary[f"{kind}/{tool}"] = {"wall_s": walls, "peak_rss_mib": mems, "ratio_to_rclip": ratio}
        rows.append([kind, tool, spread(walls), f"{ratio:.2f}" if ratio else "-", spread(mems)])
    print(table(["query", "tool", "wall s, median (min–max, n)", "× rclip", "peak RSS MiB"], rows))
    text, image = summary.get("text/sightline"), summary.get("image/sightline")
    text_mem_ok = max(text["peak_rss_mib"]) <= min(summary["text/rclip"]["peak_rss_mib"])
    print(f"\ntarget text ≤ 0.5× rclip: {'met' if text['ratio_to_rclip'] <= 0.5 else 'NOT met'} "
          f"({text['ratio_to_rclip']:.2f}×); text peak memory ≤ rclip's: {'met' if text_mem_ok else 'NOT met'}; "
          f"image ≤ 1× rclip: {'met' if image['ratio_to_rclip'] <= 1.0 else 'NOT met'} "
          f"({image['ratio_to_rclip']:.2f}×)")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", action="store_true", help="Run rclip alternately with Sightline (the comparison).")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--torch", action="store_true", help="Also time Sightline's torch path (--no-onnx).")
    parser.add_argument("--photos", type=Path, default=None, help="default: $PEERS_DIR/photos")
    parser.add_argument("--pretrained", type=Path, default=None, help="default: the harness's random ViT-B-32")
    parser.add_argument("--workdir", type=Path, default=None, help="default: $PEERS_DIR/bench-cli-search")
    parser.add_argument("--fresh", action="store_true", help="Rebuild Sightline's index (and export) first.")
    parser.add_argument("--json", type=Path, help="Also write the samples here.")
    args = parser.parse_args()
    if not args.peers:
        parser.error("this benchmark compares with rclip: pass --peers (rclip's harness must be set up)")
    photos = require(args.photos or default_photos(), "the harness's photos")
    checkpoint = require(args.pretrained or default_checkpoint(), "the random ViT-B-32 checkpoint")
    workdir = args.workdir or peers_dir() / "bench-cli-search"
    workdir.mkdir(parents=True, exist_ok=True)
    index = sightline_index(workdir, photos, checkpoint, args.fresh)
    rclip_cmd, rclip_env = rclip_setup(workdir, photos)
    image = sorted(photos.glob("*.jpg"))[7].resolve()
    samples = measure(args, commands(args, index, rclip_cmd, image), photos, rclip_env)
    summary = report(samples)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
