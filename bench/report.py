"""``python -m bench.report``: the engine against the ffmpeg CLI and against object storage, measured alike.

Every run of every variant (:mod:`bench.variants`) on every source is a set of child processes
measured by :mod:`bench.runner`, in alternation (round 1: a b c ..., round 2: a b c ...) so slow
drifts of a shared machine spread over the variants. Reported per variant: median wall and CPU,
the largest peak RSS and scratch disk, CPU by thread name, and for the first source the bytes,
x264 settings and Y-PSNR of every rung (:mod:`bench.quality`) and the one-thread stage costs
(:mod:`bench.stages`). Goals (2 cores) are GOAL lines:

* engine vs ``cli``: wall <= 0.95x, efficiency (T_limit / wall) >= 0.93, peak RSS <= 0.6x, per rung
  PSNR-Y >= the CLI's - 0.1 dB at bytes <= 1.02x;
* ``s3`` with ``engine``, ``get`` and ``put`` (through a link throttled to ``--rate-mbps``, chosen
  from one calibration run when not given): hidden = 1 - (wall(s3) - wall(engine)) /
  (T_download + T_upload) >= 0.8, meaningful when each plain transfer takes >= 0.2x wall(engine);
* ``--long N``: the first source repeated (stream copy) to N s is a second source; every variant's
  peak RSS on it within 1.1x of the short one's.

Several sources (``--kind sdr10,hlg,pq``, ``--source`` repeated) get a table of each variant's
CPU and peak RSS against the first source. Writes ``report.json`` and ``report.md`` to ``--out``.
Exit codes: 0 (goals pass, or ``--smoke``), 1 a goal failed, 2 usage, 3 a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from .quality import DEFAULT_EVERY, measure_psnr, playlist_bytes, x264_settings
from .runner import run_steps, thread_groups
from .sources import KINDS, PRESETS, SampleSpec, make_sample
from .stages import Stages, available_cores, measure_stages
from .storage import CREDENTIALS, Link, Server, s3_server
from .variants import ALIASES, VARIANTS, Plan, find_ffmpeg, plan_of, steps_for

EXIT_OK, EXIT_GOALS, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
Goal = tuple[str, bool, str]  # name, passed, detail
GOALS = {"wall": 0.95, "efficiency": 0.93, "rss": 0.6, "psnr_db": 0.1, "bytes": 1.02, "hidden": 0.8, "length": 1.10}
GOALS["chunks_cpu"] = 1.05  # forced time chunks against the serial engine, same outputs (issue: segment-parallel)
MIN_TRANSFER_SHARE = 0.2
MiB, MB = 2**20, 1e6
REPO = Path(__file__).resolve().parent.parent
_X264_THREADS = ("threads", "lookahead_threads", "sliced_threads")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return statistics.median(good) if good else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def table(rows: list[list[str]], left: int = 1) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(widths[i]) if i < left else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip()
        for r in rows
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def choose_rate(wall_a: float, source_bytes: int, ladder_bytes: int) -> tuple[float, str]:
    """A link rate (Mb/s) at which each transfer takes >= 0.2x ``wall_a`` and, if it can, <= ``wall_a``.

    The geometric middle of the fastest rate (the smaller transfer takes 0.2x the transcode) and
    the slowest (the larger one takes all of it), so both ends keep the same margin against the
    machine's speed changing after the calibration. When the sizes differ more than 5x no rate
    satisfies both: the fastest admissible one is taken, and the check cannot pass.
    """
    small, large = sorted((source_bytes, ladder_bytes))
    fastest, slowest = small * 8 / (MIN_TRANSFER_SHARE * wall_a) / MB, large * 8 / wall_a / MB

    def round_down(rate: float) -> float:  # two significant digits
        step = 10.0 ** (math.floor(math.log10(rate)) - 1)
        return max(0.01, math.floor(rate / step + 1e-9) * step)

    if slowest < fastest:
        rate = max(round_down(math.sqrt(slowest * fastest)), slowest)
        how = f"the geometric middle of {slowest:.3g} and {fastest:.3g} Mb/s"
    else:
        rate = round_down(fastest)
        how = "the fastest admissible rate: the larger transfer alone outlasts the transcode, so the check cannot pass"
    return (
        rate,
        f"calibration {wall_a:.1f} s, source {source_bytes / MB:.1f} MB, ladder {ladder_bytes / MB:.1f} MB: {how}",
    )


def looped(ffmpeg: str, short: Plan, seconds: float, cache: Path) -> Path:
    """``short`` repeated by stream copy (FFmpeg's concat demuxer, each copy its length later) to ``seconds``."""
    path = cache / f"{short.source.stem}-looped-{seconds:g}s.mp4"
    if not path.exists():
        listing = cache / f"{path.stem}.txt"
        copies = math.ceil(seconds / short.duration_s)
        listing.write_text(f"file '{short.source.resolve()}'\nduration {short.duration_s:g}\n" * copies)
        partial = path.with_name(f".{path.name}.partial.mp4")
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
        subprocess.run([*cmd, "-c", "copy", "-t", f"{seconds:g}", str(partial)], check=True, timeout=3600)
        partial.replace(path)
        listing.unlink()
    return path


def generated(cache: Path, spec: SampleSpec) -> Path:
    """The bench's own sample for ``spec``, made once; a hash of the generator in the name marks its version."""
    version = hashlib.sha256(Path(__file__).with_name("sources.py").read_bytes()).hexdigest()[:8]
    path = cache / f"{spec.kind}-{spec.width}x{spec.height}-{spec.fps}fps-{spec.seconds:g}s-g{version}.mp4"
    if not path.exists():
        log(f"making {path} ...")
        make_sample(path, spec)
    return path


def busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return float(sum(getattr(t, n, 0.0) for n in ("user", "nice", "system", "irq", "softirq", "steal")))


class Bench:
    def __init__(self, args: argparse.Namespace, out: Path, plans: list[Plan], ffmpeg: str) -> None:
        self.args, self.out, self.plans, self.ffmpeg = args, out, plans, ffmpeg
        self.records: list[dict[str, Any]] = []
        self.last: dict[tuple[int, str], Path] = {}
        self.server: Server | None = None
        self.env = dict(os.environ)

    @contextlib.contextmanager
    def storage(self) -> Iterator[None]:
        """The S3 server and the throttled link, when a variant needs them."""
        if not any(VARIANTS[k].storage for k in self.args.variants):
            yield
            return
        with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp, s3_server(Path(tmp)) as server:
            self.server = server
            for j, plan in enumerate(self.plans):
                server.put_file(plan.source, f"src{j}/source.mp4")
            rate, why = self.args.rate_mbps, "given"
            if rate is None:
                calibration = self.run(0, "engine", 0)
                rate, why = choose_rate(
                    calibration["inner_wall_s"],
                    self.plans[0].source.stat().st_size,
                    calibration["inner"].get("output_bytes", 0),
                )
            self.rate = {"mbps": rate, "why": why}
            log(f"link: {rate:g} Mb/s each way ({why})")
            link = Link(server.port, rate)
            self.env.update(
                CREDENTIALS,
                AWS_ENDPOINT_URL_S3=link.endpoint,
                AWS_EC2_METADATA_DISABLED="true",
                AWS_CONFIG_FILE=os.devnull,
                AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            )
            try:
                yield
            finally:
                link.close()

    def run(self, j: int, key: str, index: int) -> dict[str, Any]:
        plan, out = self.plans[j], self.out / "runs" / f"{j}-{key}{index}"
        shutil.rmtree(out, ignore_errors=True)
        s3 = self.server.uri(f"src{j}/{key}{index}/") if self.server else ""
        after = VARIANTS[key].after
        steps = steps_for(key, plan, out, ffmpeg=self.ffmpeg, s3=s3, after=self.last.get((j, after or "")))
        scratch = [out / "cwd", out / "tmp"]
        for d in scratch:
            d.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        env = {**self.env, "TMPDIR": str(out / "tmp"), "PYTHONPATH": path}
        load, busy = os.getloadavg()[0], busy_cpu_s()
        log(f"run {index} source {j} {key} ...")
        timeout = self.args.timeout or max(300, 30 * plan.duration_s)
        scratch = scratch if VARIANTS[key].storage else []
        m = run_steps(steps, log_stem=out / "log", timeout_s=timeout, env=env, cwd=out / "cwd", scratch=scratch)
        others = max(0.0, busy_cpu_s() - busy - m.cpu_s)
        inner: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError, IndexError):
            step = 1 if key == "seq" else 0  # the engine's step of the sequential variant
            inner = json.loads((out / f"log.{step}.0.out").read_text())
        record = {
            "source": j,
            "variant": key,
            "index": index,
            **asdict(m),
            "ok": m.ok,
            "load_1m": load,
            "others_share": ratio(others, m.wall_s * available_cores()),
            "inner": inner,
            "inner_wall_s": m.wall_s if key == "seq" else inner.get("wall_s", math.nan),
        }
        if m.ok and key in ("engine", "cli", "cli-rung"):
            record["bytes"] = {n: playlist_bytes(out / "ladder" / n / "index.m3u8") for n in plan.rendition_names}
        if self.server and VARIANTS[key].storage:
            prefix = s3.split("/", 3)[3]
            stored = self.server.keys(prefix)
            objects, size = len(stored), sum(stored.values())
            record["stored"] = {"objects": objects, "bytes": size, "master": "master.m3u8" in stored}
            self.server.delete(prefix)
        if not m.ok:
            log(f"  FAILED: exit codes {m.exit_codes}{' (timed out)' if m.timed_out else ''}; logs {out}/log.*")
        log(
            f"  wall {m.wall_s:.2f} s, CPU {m.cpu_s:.2f} s, peak RSS {m.peak_rss_bytes / MiB:.0f} MiB, "
            f"others {100 * record['others_share']:.0f}%"
        )
        previous = self.last.get((j, key))
        if m.ok:
            self.last[(j, key)] = out / "ladder"
        if previous and previous.parent != out and not self.args.keep_outputs and index:
            shutil.rmtree(previous.parent, ignore_errors=True)
        return record

    def run_all(self) -> None:
        with self.storage():
            for index in range(1, self.args.runs + 1):
                for j in range(len(self.plans)):
                    for key in self.args.variants:
                        self.records.append(self.run(j, key, index))


def summarize(bench: Bench) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for j, plan in enumerate(bench.plans):
        for key in bench.args.variants:
            mine = [r for r in bench.records if r["source"] == j and r["variant"] == key]
            good = [r for r in mine if r["ok"]]
            names = {n for r in good for n in r["thread_cpu_s"]}  # thread_groups: sorted, largest first
            rows[f"{j}/{key}"] = {
                "source": j,
                "variant": key,
                "runs_ok": len(good),
                "runs_failed": len(mine) - len(good),
                "wall_s": median([r["wall_s"] for r in good]),
                "walls_s": [r["wall_s"] for r in good],
                "inner_wall_s": median([r["inner_wall_s"] for r in good]),
                "cpu_s": median([r["cpu_s"] for r in good]),
                "peak_rss_bytes": max((r["peak_rss_bytes"] for r in good), default=0),
                "peak_scratch_bytes": max((r["peak_scratch_bytes"] for r in good), default=0),
                "realtime_x": ratio(plan.duration_s, median([r["wall_s"] for r in good])),
                "thread_cpu_s": thread_groups(
                    (n, median([r["thread_cpu_s"].get(n, 0.0) for r in good])) for n in names
                ),
                "bytes": good[-1].get("bytes", {}) if good else {},
                "inner": good[-1]["inner"] if good else {},
                "stored": good[-1].get("stored") if good else None,
            }
    return rows


def rung_facts(bench: Bench, rows: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """PSNR and x264 settings of the first source's rungs per local variant; x264 settings unlike the engine's."""
    plan = bench.plans[0]
    outputs = {k: p for (j, k), p in bench.last.items() if j == 0 and k in ("engine", "cli", "cli-rung")}
    psnr = measure_psnr(plan, outputs, bench.args.psnr_every) if outputs and not bench.args.no_psnr else {}
    x264 = {k: {r.name: x264_settings(p / r.name / "index.m3u8") for r in plan.rungs} for k, p in outputs.items()}

    def options(sei: str | None) -> dict[str, str]:
        return dict(p.split("=", 1) for p in (sei or "").split("options:", 1)[-1].split() if "=" in p)

    facts, mismatches = {}, []
    for key in outputs:
        for rung in plan.rungs:
            mine = options(x264[key][rung.name])
            facts[f"{key}/{rung.name}"] = {
                **psnr.get(key, {}).get(rung.name, {}),
                "bytes": rows[f"0/{key}"]["bytes"].get(rung.name, 0),
                "x264_threads": " ".join(f"{k}={mine[k]}" for k in _X264_THREADS if k in mine),
            }
            base = options(x264.get("engine", {}).get(rung.name))
            diff = sorted(k for k in set(base) | set(mine) if k not in _X264_THREADS and base.get(k) != mine.get(k))
            if key != "engine" and base and diff:
                mismatches.append(f"{key} {rung.name}: " + ", ".join(f"{k} {base.get(k)}/{mine.get(k)}" for k in diff))
    return facts, mismatches


def goals(bench: Bench, rows: dict[str, Any], rungs: dict[str, Any], stages: Stages | None) -> list[Goal]:
    out: list[Goal] = []
    a, b = rows.get("0/engine"), rows.get("0/cli")
    if a and b and a["runs_ok"] and b["runs_ok"]:
        w, r = ratio(a["wall_s"], b["wall_s"]), ratio(a["peak_rss_bytes"], b["peak_rss_bytes"])
        out.append(("wall", w <= GOALS["wall"], f"engine/cli {w:.3f} (target <= {GOALS['wall']})"))
        if stages:
            e, limit = stages.t_limit_s / a["wall_s"], f"T_limit {stages.t_limit_s:.2f} s"
            cli = f"cli {stages.t_limit_s / b['wall_s']:.3f}"
            detail = f"{limit} / wall {a['wall_s']:.2f} s = {e:.3f} (target >= {GOALS['efficiency']}; {cli})"
            out.append(("efficiency", e >= GOALS["efficiency"], detail))
        out.append(("peak RSS", r <= GOALS["rss"], f"engine/cli {r:.3f} (target <= {GOALS['rss']})"))
        for rung in bench.plans[0].rungs:
            ra, rb = rungs.get(f"engine/{rung.name}", {}), rungs.get(f"cli/{rung.name}", {})
            if "psnr_y_db" in ra and "psnr_y_db" in rb:
                d, by = ra["psnr_y_db"] - rb["psnr_y_db"], ratio(ra["bytes"], rb["bytes"])
                detail = f"PSNR-Y {d:+.3f} dB vs cli (>= -{GOALS['psnr_db']}), bytes {by:.4f}x (<= {GOALS['bytes']})"
                out.append((f"quality {rung.name}", d >= -GOALS["psnr_db"] and by <= GOALS["bytes"], detail))
    for serial, chunked in (("engine", "engine-chunks"), ("engine-bare", "engine-chunks-bare")):
        a, b = rows.get(f"0/{serial}"), rows.get(f"0/{chunked}")
        if a and b and a["runs_ok"] and b["runs_ok"]:
            c, w = ratio(b["cpu_s"], a["cpu_s"]), ratio(b["wall_s"], a["wall_s"])
            detail = f"{chunked}/{serial} CPU {c:.3f} (target <= {GOALS['chunks_cpu']}), wall {w:.3f}"
            out.append((f"chunks CPU {serial}", c <= GOALS["chunks_cpu"], detail))
    if all(f"0/{k}" in rows for k in ("engine", "s3", "get", "put")):
        a, s3, get, put = (rows[f"0/{k}"]["inner_wall_s"] for k in ("engine", "s3", "get", "put"))
        hidden = 1 - (s3 - a) / (get + put) if get + put else math.nan
        detail = f"T_download {get / a:.2f}x, T_upload {put / a:.2f}x wall(engine) (each >= {MIN_TRANSFER_SHARE})"
        out.append(("transfer share", min(get, put) / a >= MIN_TRANSFER_SHARE, detail))
        detail = f"1 - ({s3:.2f} - {a:.2f}) / ({get:.2f} + {put:.2f}) = {hidden:.3f} (target >= {GOALS['hidden']})"
        out.append(("overlap", hidden >= GOALS["hidden"], f"{detail}; floor max(a, get, put) {max(a, get, put):.2f} s"))
    for key in bench.args.variants if bench.args.long else ():
        pair = [rows[f"{j}/{key}"]["peak_rss_bytes"] for j in (0, 1)]
        spread, detail = ratio(max(pair), min(pair)), f"{pair[0] / MiB:.0f} -> {pair[1] / MiB:.0f} MiB"
        out.append((f"length RSS {key}", spread <= GOALS["length"], f"{detail}: {spread:.3f} (<= {GOALS['length']})"))
    return out


def render(
    bench: Bench,
    rows: dict[str, Any],
    rungs: dict[str, Any],
    mismatches: list[str],
    stages: Stages | None,
    goal_list: list[Goal],
) -> str:
    lines = [f"source {j}: {p.source} ({p.describe})" for j, p in enumerate(bench.plans)]
    p0 = bench.plans[0]
    lines += [
        f"ladder: {', '.join(f'{r.name} {r.width}x{r.height}@{float(r.fps):g}' for r in p0.rungs)}; preset "
        f"{p0.preset}, crf {p0.crf}; {available_cores()} cores; {bench.args.runs} run(s) each, alternating",
        "",
    ]
    head = (
        "source/variant|runs|wall s|CPU s|peak RSS MiB|scratch MiB|realtime|wall/cli|CPU/cli|RSS/cli|efficiency|walls"
    )
    body = [head.split("|")]
    for name, r in rows.items():
        base = rows.get(f"{r['source']}/cli", {})
        runs = str(r["runs_ok"]) + (f" ({r['runs_failed']} failed)" if r["runs_failed"] else "")
        cells = [fmt(r["wall_s"]), fmt(r["cpu_s"]), fmt(r["peak_rss_bytes"] / MiB, ".0f")]
        cells += [fmt(r["peak_scratch_bytes"] / MiB, ".1f"), fmt(r["realtime_x"]) + "x"]
        cells += [fmt(ratio(r[k], base.get(k, math.nan)), ".3f") for k in ("wall_s", "cpu_s", "peak_rss_bytes")]
        cells.append(fmt(stages.t_limit_s / r["wall_s"], ".3f") if stages and r["source"] == 0 else "-")
        body.append([name, runs, *cells, " ".join(fmt(w, ".1f") for w in r["walls_s"])])
    lines.append(table(body))
    if rungs:
        # PSNR-Y against the source scaled down by the engine's scaler, and (src) at the source's
        # size, each rung scaled up with one fixed filter (bench/quality.py): both while they disagree.
        head = "rung|variant|MB|bytes/cli|PSNR-Y dB|dB vs cli|PSNR-Y src dB|src vs cli|SSIM-Y src|frames|x264 threads"
        body = [head.split("|")]
        for rung in p0.rungs:
            for key in [k for k in bench.args.variants if f"{k}/{rung.name}" in rungs]:
                f, c = rungs[f"{key}/{rung.name}"], rungs.get(f"cli/{rung.name}", {})
                psnr, vs_cli = f.get("psnr_y_db", math.nan), f.get("psnr_y_db", math.nan) - c.get("psnr_y_db", math.nan)
                cells = [fmt(f["bytes"] / MB, ".3f"), fmt(ratio(f["bytes"], c.get("bytes", math.nan)), ".4f")]
                src = f.get("psnr_y_src_db", math.nan)
                src_vs_cli = src - c.get("psnr_y_src_db", math.nan)
                cells += [fmt(psnr, ".3f"), fmt(vs_cli, "+.3f"), fmt(src, ".3f"), fmt(src_vs_cli, "+.3f")]
                cells.append(fmt(f.get("ssim_y_src", math.nan), ".5f"))
                cells += [str(f.get("frames", "-")), f["x264_threads"]]
                body.append([f"{rung.name} {rung.width}x{rung.height}", key, *cells])
        lines += ["", table(body, left=2)]
    if stages:
        body = [["stage (1 thread)", "CPU s", "ms/src frame"]]
        parts = {
            "decode": stages.decode_cpu_s,
            "audio": stages.audio_cpu_s,
            **{f"scale {k}": v for k, v in stages.scale_cpu_s.items() if v},
            **{f"encode {k}": v for k, v in stages.encode_cpu_s.items()},
            "total": stages.total_cpu_s,
        }
        frames = p0.duration_s * float(p0.fps)
        body += [[k, fmt(v), fmt(1000 * v / frames)] for k, v in parts.items()]
        body.append([f"T_limit = total / {stages.cores} cores", fmt(stages.t_limit_s), ""])
        body += [
            [f"{k}: CPU / stage total", fmt(ratio(r["cpu_s"], stages.total_cpu_s), ".3f"), ""]
            for k, r in rows.items()
            if r["source"] == 0 and r["variant"] in ("engine", "cli", "cli-rung")
        ]
        lines += ["", table(body)]
    lines += [
        "",
        "CPU s by thread name (median; a thread counts under the one that started it, x264's under the rung "
        "thread or the CLI's fc0):",
    ]
    for name, r in rows.items():
        if shown := list(r["thread_cpu_s"].items())[:8]:
            lines.append(f"  {name}: " + ", ".join(f"{n} {c:.1f}" for n, c in shown))
    for r in [r for r in rows.values() if r["source"]]:
        base = rows["0/" + r["variant"]]
        lines.append(
            f"{r['variant']} on source {r['source']} against source 0: CPU {ratio(r['cpu_s'], base['cpu_s']):.3f}x, "
            f"peak RSS {ratio(r['peak_rss_bytes'], base['peak_rss_bytes']):.3f}x"
        )
    for name, r in rows.items():
        inner = r["inner"]
        if "reader" in inner or r.get("stored"):
            phases = ", ".join(f"{k} {inner[k]:.1f}" for k in ("startup_s", "encoded_s") if k in inner)
            lines.append(
                f"{name}: work wall {fmt(r['inner_wall_s'])} s; {phases}; reader {inner.get('reader')}; "
                f"sink {inner.get('sink')}; stored {r['stored']}"
            )
    if hasattr(bench, "rate"):
        lines.append(f"link: {bench.rate['mbps']:g} Mb/s each way ({bench.rate['why']})")
    shares = [r["others_share"] for r in bench.records if not math.isnan(r["others_share"])]
    lines.append(
        f"other processes' share of the CPU during the runs: {', '.join(f'{100 * s:.0f}%' for s in shares)}"
        + (" (over 10%: read wall with care)" if shares and max(shares) > 0.1 else "")
    )
    lines += [f"WARNING x264 settings differ from the engine's: {m}" for m in mismatches]
    lines += [f"GOAL {name}: {'PASS' if ok else 'FAIL'}  {detail}" for name, ok, detail in goal_list]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, action="append", help="a video file (repeat for several)")
    p.add_argument("--kind", default="scene", help=f"generated sources, comma-separated: {', '.join(KINDS)}")
    p.add_argument("--seconds", type=float, default=None, help="generated length (default 60; --smoke 3)")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument(
        "--variants",
        default="engine,cli,cli-rung",
        help=f"comma-separated: {', '.join(VARIANTS)} (or a, b, c for engine, cli, cli-rung)",
    )
    p.add_argument("--runs", type=int, default=None, help="runs per variant (default 3; --smoke and --long 1)")
    p.add_argument("--preset", choices=PRESETS, default="veryfast")
    p.add_argument("--crf", type=int, default=23)
    p.add_argument("--long", type=float, default=None, help="add the first source repeated to this many seconds")
    p.add_argument("--rate-mbps", type=float, default=None, help="the link's rate each way for the s3 variants")
    p.add_argument("--no-psnr", action="store_true")
    p.add_argument("--psnr-every", type=int, default=DEFAULT_EVERY)
    p.add_argument("--no-stages", action="store_true", help="skip the one-thread stage costs (T_limit)")
    p.add_argument("--stages-seconds", type=float, default=None, help="measure the stages on the first N s only")
    p.add_argument("--cores", type=int, default=None, help="cores for T_limit (default: the affinity mask)")
    p.add_argument("--smoke", action="store_true", help="a 3 s 854x480 source, one run each, exit 0 unless a run fails")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=Path("bench/results/sources"))
    p.add_argument("--ffmpeg", default=None)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--keep-outputs", action="store_true")
    args = p.parse_args(argv)
    args.variants = [ALIASES.get(v.strip(), v.strip()) for v in args.variants.split(",") if v.strip()]
    kinds = [k.strip() for k in args.kind.split(",")]
    for bad, message in (
        (not args.variants or any(v not in VARIANTS for v in args.variants), f"--variants: among {list(VARIANTS)}"),
        (len(set(args.variants)) != len(args.variants), "--variants names a variant twice"),
        (any(k not in KINDS for k in kinds), f"--kind: among {', '.join(KINDS)}"),
        ("put" in args.variants and "engine" not in args.variants, "put uploads the engine's ladder: add engine"),
        (any(not s.is_file() for s in args.source or []), "--source: no such file"),
        (args.rate_mbps is not None and args.rate_mbps <= 0, "--rate-mbps must be positive"),
    ):
        if bad:
            p.error(message)
    args.kinds = kinds
    if "put" in args.variants:  # after the engine, whose ladder it uploads
        args.variants = [v for v in args.variants if v != "put"] + ["put"]
    args.runs = args.runs or (1 if args.smoke or args.long else 3)
    if args.smoke:
        args.width, args.height, args.seconds = 854, 480, args.seconds or 3.0
        args.rate_mbps = args.rate_mbps or 20.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = (args.out or Path("bench/results") / datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        ffmpeg = find_ffmpeg(args.ffmpeg)
        cache = out / "sources" if args.smoke else args.cache.resolve()
        spec = SampleSpec(width=args.width, height=args.height, fps=args.fps, seconds=args.seconds or 60.0)
        sources = [s.resolve() for s in args.source or []] or [
            generated(cache, replace(spec, kind=k)) for k in args.kinds
        ]
        plans = [plan_of(s, preset=args.preset, crf=args.crf) for s in sources]
        if args.long:
            plans = [plans[0], plan_of(looped(ffmpeg, plans[0], args.long, cache), preset=args.preset, crf=args.crf)]
        for j, plan in enumerate(plans):
            log(f"source {j}: {plan.source} ({plan.describe})")
            with plan.source.open("rb") as f:  # read once, so no variant pays for the disk
                while f.read(1 << 22):
                    pass
        bench = Bench(args, out, plans, ffmpeg)
        bench.run_all()
        rows = summarize(bench)
        rungs, mismatches = rung_facts(bench, rows)
        stages = None
        if not args.no_stages and any(k in args.variants for k in ("engine", "cli", "cli-rung")):
            log("measuring the stages on one thread (T_limit) ...")
            stages = measure_stages(plans[0], cores=args.cores, max_seconds=args.stages_seconds)
    except KeyboardInterrupt:
        log("interrupted")
        return EXIT_FAILED
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        log(f"bench.report: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    goal_list = goals(bench, rows, rungs, stages)
    text = render(bench, rows, rungs, mismatches, stages, goal_list)
    print(text)
    report = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "machine": f"{platform.platform()}, Python {platform.python_version()}, {available_cores()} cores",
        "sources": [{"path": str(p.source), "description": p.describe} for p in plans],
        "ladder": [{**asdict(r), "fps": str(r.fps)} for r in plans[0].rungs],
        "variants": rows,
        "rungs": rungs,
        "x264_mismatches": mismatches,
        "stages": {**asdict(stages), "t_limit_s": stages.t_limit_s} if stages else None,
        "rate": getattr(bench, "rate", None),
        "goals": [{"name": n, "pass": ok, "detail": d} for n, ok, d in goal_list],
        "runs": bench.records,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "report.md").write_text(f"# bench report {report['started']}\n\n```\n{text}\n```\n")
    log(f"wrote {out / 'report.json'}, {out / 'report.md'}")
    if any(not r["ok"] for r in bench.records):
        return EXIT_FAILED
    return EXIT_OK if args.smoke or all(ok for _, ok, _ in goal_list) else EXIT_GOALS


if __name__ == "__main__":
    raise SystemExit(main())
