"""What the HDR tone map costs: CPU of ``transcode`` on an HDR source vs the same content in SDR.

Makes one SDR clip (``bench.sources``, BT.709), then from it, frame by frame,
the same pictures as 10-bit BT.2020 HLG and/or PQ (the SDR grade placed at
BT.2408's 203 cd/m2 reference white), and the same pictures as 10-bit BT.709
SDR: all H.264 High 10 at the same CRF, so decode costs match and the
difference is the tone map (the 65-point LUT built per run and the
decoder-graph conversion of every frame). Each source is transcoded
``--runs`` times, alternating, with ``python -m transcoder SRC -o OUT --preset
P -q`` (its own thread plan); the CPU is the child's user + system seconds.

    python -m bench.hdr_cost --seconds 6 --runs 3 [--transfers hlg,pq] [--width 1920 --height 1080]

Measured (2 shared vCPUs, Zen 4, PyAV 18.1; ``--seconds 5 --runs 3 --transfers hlg,pq``, 1080p30
grainy sample, veryfast, CPU median of 3): SDR 11.71 s, HLG 14.44 s (1.233x), PQ 14.65 s
(1.250x): the tone map adds 18-20 ms CPU per 1080p frame (LUT build and file ~0.2 s per run
included); wall 17.7 / 19.4 / 18.8 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
import numpy.typing as npt

from transcoder import tonemap

from .sources import SampleSpec, make_sample

F64 = npt.NDArray[np.float64]
_TRANSFER_TAGS = {"hlg": 18, "pq": 16, "sdr": 1}


def hdr_grade(sdr: F64, transfer: str) -> F64:
    """SDR BT.709 R'G'B' in [0, 1] -> the BT.2020 HLG/PQ R'G'B' an HDR grade of it holds."""
    light = np.clip(sdr, 0.0, 1.0) ** tonemap.SDR_GAMMA * tonemap.REFERENCE_WHITE_NITS
    light = np.clip(light @ tonemap.primaries_matrix("bt709", "bt2020").T, 0.0, None)
    if transfer == "pq":
        return tonemap.pq_inverse_eotf(light)
    display = light / tonemap.HLG_DISPLAY_PEAK_NITS
    yd = np.maximum(display @ tonemap.luminance_weights("bt2020"), 1e-12)[..., None]
    scene = display * yd ** ((1 - tonemap.HLG_GAMMA) / tonemap.HLG_GAMMA)
    return tonemap.hlg_oetf(scene)


def _grade_graph(template: av.VideoFrame, transfer: str, cube: Path) -> av.filter.Graph:
    """SDR yuv420p BT.709 -> yuv420p10le in ``transfer`` (a LUT for HDR, a bit-depth change for SDR)."""
    graph = av.filter.Graph()
    node = graph.add_buffer(
        width=template.width, height=template.height, format=template.format, time_base=Fraction(1, 30)
    )
    if transfer == "sdr":
        # Explicit matrix and range: the buffer carries no colour properties,
        # and a bare format=yuv420p10le shifted the levels (mean Y' 125.7 -> 122.4).
        chain = [
            ("scale", "in_color_matrix=bt709:out_color_matrix=bt709:in_range=tv:out_range=tv"),
            ("format", "yuv420p10le"),
        ]
    else:
        chain = [
            ("scale", "in_color_matrix=bt709:in_range=tv"),
            ("format", "gbrp16le"),
            ("lut3d", f"file={cube}:interp=tetrahedral"),
            ("scale", "out_color_matrix=bt2020:out_range=tv"),
            ("format", "yuv420p10le"),
        ]
    for name, args in chain:
        nxt = graph.add(name, args)
        node.link_to(nxt)
        node = nxt
    sink = graph.add("buffersink")
    node.link_to(sink)
    graph.configure()
    return graph


def make_graded(sdr_source: Path, path: Path, transfer: str, *, crf: int = 16) -> Path:
    """``sdr_source``'s pictures as a 10-bit H.264 High 10 clip in ``transfer`` ("hlg", "pq" or "sdr")."""
    with tempfile.TemporaryDirectory() as tmp:
        cube = Path(tmp) / "grade.cube"
        axis = np.linspace(0.0, 1.0, tonemap.LUT_SIZE)
        b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
        if transfer != "sdr":
            cube.write_text(tonemap.cube_text(hdr_grade(np.stack([r, g, b], axis=-1), transfer)))
        with av.open(str(sdr_source)) as src, av.open(str(path), "w") as out:
            vin = src.streams.video[0]
            vin.codec_context.thread_type = "AUTO"
            rate = vin.average_rate or Fraction(30)
            stream = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "superfast"})
            stream.width, stream.height, stream.pix_fmt = vin.width, vin.height, "yuv420p10le"
            cc = stream.codec_context
            cc.time_base = 1 / Fraction(rate)
            cc.thread_type = "FRAME"
            cc.color_primaries = 1 if transfer == "sdr" else 9
            cc.colorspace = 1 if transfer == "sdr" else 9
            cc.color_trc = _TRANSFER_TAGS[transfer]
            cc.color_range = 1
            graph = None
            for i, frame in enumerate(src.decode(vin)):
                if graph is None:
                    graph = _grade_graph(frame, transfer, cube)
                frame.pts, frame.time_base = i, Fraction(1, 30)
                graph.push(frame)
                graded = graph.pull()
                assert isinstance(graded, av.VideoFrame)
                graded.pts, graded.time_base = i, cc.time_base
                out.mux(stream.encode(graded))
            out.mux(stream.encode(None))
    return path


def transcode_cpu_s(source: Path, out: Path, preset: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one ``python -m transcoder`` run."""
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "transcoder", str(source), "-o", str(out), "--preset", preset, "-q", "--no-poster"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--transfers", default="hlg", help="comma-separated: hlg, pq")
    parser.add_argument("--work", type=Path, default=None, help="directory for the clips (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="hdr-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = SampleSpec(width=args.width, height=args.height, seconds=args.seconds, audio=False)
    sdr8 = make_sample(work / "sdr8.mp4", spec)
    kinds = ["sdr", *args.transfers.split(",")]
    sources = {kind: make_graded(sdr8, work / f"{kind}10.mp4", kind) for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    wall: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.runs):
        for kind in kinds:  # alternating, so drifting machine load hits every source alike
            c, w = transcode_cpu_s(sources[kind], work / f"out-{kind}", args.preset)
            cpu[kind].append(c)
            wall[kind].append(w)
    base = statistics.median(cpu["sdr"])
    print(f"{args.width}x{args.height} {args.seconds:g} s, preset {args.preset}, {args.runs} runs (H.264 High 10)")
    for kind in kinds:
        med = statistics.median(cpu[kind])
        runs = ", ".join(f"{c:.2f}" for c in cpu[kind])
        print(
            f"{kind:4s} CPU median {med:6.2f} s ({runs}); wall median {statistics.median(wall[kind]):6.2f} s; "
            f"vs sdr {med / base:5.3f}x (+{(med - base) / (args.seconds * spec.fps) * 1000:.1f} ms CPU per frame)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
