"""Colour on every rung: tags, matrix and range conversion, HDR tone mapping.

Every rung must come out BT.709, limited range, and say so (SPS VUI, fMP4
``colr``), whatever the source was: BT.709 or BT.601, tagged or not, full
range (MJPEG webcams), or HDR (HLG from phones, PQ). The pictures are checked
against what the source shows: RGB PSNR for SDR sources, and mean saturation
and brightness against the SDR original for HDR ones. The "before" figures
(what an untagged, unconverted output shows) are asserted too, so each test
shows the difference its property makes.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import av.filter
import imageio_ffmpeg
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

import transcoder
from tests.support.media_colour import (
    MASTER_DISPLAY_1000,
    U8,
    hdr_signal,
    make_hdr_clip,
    make_sdr_clip,
    rgb_psnr,
    saturation_and_brightness,
    sdr_picture,
    to_rgb,
)
from transcoder import EncoderSettings, LadderPolicy, RungSpec, TranscodeConfig, TranscodeResult, tonemap
from transcoder.bitstream import mp4_top_level_boxes
from transcoder.colour import ScalerColour, colour_of, hdr_peak_nits, plan_colour
from transcoder.encode import x264_options
from transcoder.scale import Scaler

ROOT = Path(__file__).resolve().parents[2]

LADDER = LadderPolicy(
    rungs=(
        RungSpec(short_side=720, bitrate_kbps=4000),
        RungSpec(short_side=360, bitrate_kbps=1000),
        RungSpec(short_side=180, bitrate_kbps=300),
    ),
    min_rung_saving=0.0,  # test patterns are still: every rung is checked
)
# BT.709 tags as decoded frames report them (AVCOL_PRI/TRC/SPC_BT709, AVCOL_RANGE_MPEG).
BT709_LIMITED = (1, 1, 1, 1)


# ----------------------------------------------------------------------------- the plan (pure)


@pytest.mark.parametrize(
    ("tags", "pix_fmt", "height", "expected"),
    [
        # tags: matrix, primaries, transfer, range -> (matrix, range, tone map, scaler conversion, assumed)
        (("bt709", "bt709", "bt709", "tv"), "yuv420p", 1080, ("bt709", "tv", "none", None, ())),
        (
            ("unknown", "unknown", "unknown", "unknown"),
            "yuv420p",
            720,
            ("bt709", "tv", "none", None, ("matrix", "range", "primaries", "transfer")),
        ),
        (
            ("unknown", "unknown", "unknown", "unknown"),
            "yuv420p",
            576,
            ("smpte170m", "tv", "none", ("ITU601", "MPEG"), ("matrix", "range", "primaries", "transfer")),
        ),
        (
            ("bt470bg", "unknown", "unknown", "pc"),
            "yuvj420p",
            480,
            ("bt470bg", "pc", "none", ("ITU601", "JPEG"), ("primaries", "transfer")),
        ),
        (
            ("bt709", "bt709", "bt709", "unknown"),
            "yuvj420p",
            1080,
            ("bt709", "pc", "none", ("ITU709", "JPEG"), ("range",)),
        ),
        (("bt709", "bt709", "bt709", "pc"), "yuv420p", 1080, ("bt709", "pc", "none", ("ITU709", "JPEG"), ())),
        (("bt2020nc", "bt2020", "arib-std-b67", "tv"), "yuv420p10le", 2160, ("bt2020nc", "tv", "hlg", None, ())),
        (("bt2020nc", "bt2020", "smpte2084", "tv"), "yuv420p10le", 1080, ("bt2020nc", "tv", "pq", None, ())),
        (("bt2020nc", "bt2020", "bt2020-10", "tv"), "yuv420p10le", 1080, ("bt2020nc", "tv", "gamut", None, ())),
        (
            ("unknown", "unknown", "unknown", "unknown"),
            "rgb24",
            360,
            ("gbr", "pc", "none", ("ITU709", "JPEG"), ("primaries", "transfer")),
        ),
    ],
)
def test_plan_colour(tags: tuple[str, str, str, str], pix_fmt: str, height: int, expected: tuple[Any, ...]) -> None:
    matrix, primaries, transfer, range_ = tags
    plan = plan_colour(
        matrix=matrix, primaries=primaries, transfer=transfer, range=range_, pix_fmt=pix_fmt, height=height
    )
    scaler = None if plan.scaler is None else (plan.scaler.src_colorspace, plan.scaler.src_color_range)
    assert (plan.matrix, plan.range, plan.tone_map, scaler, plan.assumed) == expected


def test_hdr_peak_comes_from_max_cll_then_the_mastering_display() -> None:
    max_cll = struct.pack("=II", 4000, 400)
    # ten rationals: primaries (6), white point (2), min and max luminance; then the two flags.
    mastering = struct.pack("=20i2i", *([1, 1] * 8), 5, 10000, 1000, 1, 1, 1)
    assert hdr_peak_nits(content_light=max_cll, mastering=mastering) == 4000.0
    assert hdr_peak_nits(content_light=None, mastering=mastering) == 1000.0
    assert hdr_peak_nits(content_light=struct.pack("=II", 0, 0), mastering=None) is None
    no_luminance = mastering[:-4] + struct.pack("=i", 0)
    assert hdr_peak_nits(content_light=None, mastering=no_luminance) is None


@pytest.mark.parametrize(
    ("max_cll", "master_display", "peak"),
    [(4000, MASTER_DISPLAY_1000, 4000.0), (None, MASTER_DISPLAY_1000, 1000.0), (None, None, None)],
)
def test_probe_reads_the_hdr10_peak(
    tmp_path: Path, max_cll: int | None, master_display: str | None, peak: float | None
) -> None:
    clip = make_hdr_clip(
        tmp_path / "hdr10.mp4", transfer="pq", frames=2, max_cll=max_cll, master_display=master_display
    )
    video = transcoder.probe(clip).video
    assert video.hdr_peak_nits == peak
    assert colour_of(video).peak_nits == (peak or 1000.0)


# ----------------------------------------------------------------------------- the tone curve (pure)


def test_eetf_keeps_light_below_the_knee_and_lands_the_peak_on_reference_white() -> None:
    nits = np.array([0.0, 10.0, 50.0, 80.0, 203.0, 600.0, 1000.0, 4000.0])
    out = tonemap.bt2390_eetf(nits, source_peak=1000.0, target_peak=203.0)
    np.testing.assert_allclose(out[:4], nits[:4], rtol=1e-6)
    assert np.all(np.diff(out) >= 0)
    assert out[-2] == pytest.approx(203.0, rel=1e-6) and out[-1] == pytest.approx(203.0, rel=1e-6)
    assert 150.0 < out[4] < 190.0  # reference white is compressed, not clipped


@pytest.mark.parametrize("transfer", ["hlg", "pq"])
def test_lut_mapping_inverts_the_hdr_grade_of_an_sdr_picture_below_the_knee(transfer: str) -> None:
    plan = plan_colour(
        matrix="bt2020nc",
        primaries="bt2020",
        transfer="arib-std-b67" if transfer == "hlg" else "smpte2084",
        range="tv",
        pix_fmt="yuv420p10le",
        height=1080,
    )
    sdr = np.linspace(0.0, 0.65, 14)  # grey up to ~72 cd/m2 in the HDR grade: below the knee
    rgb = np.round(np.stack([sdr, sdr * 0.8, sdr * 0.5], axis=-1) * 255).astype(np.uint8)
    back = tonemap.sdr_from_source(hdr_signal(rgb[None], transfer), plan)[0]
    np.testing.assert_allclose(back, rgb / 255, atol=2e-3)


def test_lut_mapping_of_sdr_bt2020_converts_the_gamut_only() -> None:
    plan = plan_colour(
        matrix="bt2020nc", primaries="bt2020", transfer="bt2020-10", range="tv", pix_fmt="yuv420p10le", height=1080
    )
    assert plan.tone_map == "gamut"
    rgb = sdr_picture(32, 18).astype(np.float64) / 255
    as_2020 = np.clip((rgb**2.4) @ tonemap.primaries_matrix("bt709", "bt2020").T, 0, 1) ** (1 / 2.4)
    back = tonemap.sdr_from_source(as_2020, plan)
    np.testing.assert_allclose(back, rgb, atol=2e-3)
    assert np.abs(as_2020 - rgb).max() > 0.05  # the picture did change in BT.2020


def test_gamut_fit_keeps_luminance_and_lands_inside() -> None:
    weights = tonemap.luminance_weights("bt709")
    pure_2020_green = np.array([[0.0, 0.5, 0.0]]) @ tonemap.primaries_matrix("bt2020", "bt709").T
    assert pure_2020_green.min() < 0  # outside BT.709
    fitted = tonemap.fit_gamut(pure_2020_green, weights)
    assert fitted.min() >= 0 and fitted.max() <= 1
    assert float((fitted @ weights)[0]) == pytest.approx(float((pure_2020_green @ weights)[0]), rel=1e-9)
    inside = np.array([[0.2, 0.5, 0.3]])
    np.testing.assert_array_equal(tonemap.fit_gamut(inside, weights), inside)


def test_tone_map_chain_runs_from_any_directory(tmp_path: Path) -> None:
    plan = plan_colour(
        matrix="bt2020nc", primaries="bt2020", transfer="smpte2084", range="tv", pix_fmt="yuv420p10le", height=36
    )
    folder = tmp_path / "it's a:weird\\dir"
    folder.mkdir()
    cube = folder / "pq.cube"
    cube.write_text(tonemap.cube_text(tonemap.build_lut(plan, size=17)))
    source = av.VideoFrame.from_ndarray(np.full((36, 64, 3), 40000, np.uint16), format="rgb48le").reformat(
        format="yuv420p10le", dst_colorspace="BT2020", dst_color_range="MPEG"
    )
    source.pts, source.time_base = 0, Fraction(1, 25)
    graph = av.filter.Graph()
    node = graph.add_buffer(width=64, height=36, format=source.format, time_base=source.time_base)
    for name, args in tonemap.tone_map_filters(plan, str(cube)):
        nxt = graph.add(name, args)
        node.link_to(nxt)
        node = nxt
    node.link_to(graph.add("buffersink"))
    graph.configure()
    graph.push(source)
    out = graph.pull()
    assert isinstance(out, av.VideoFrame)
    assert (out.format.name, *_tags(out)) == ("yuv420p", *BT709_LIMITED)
    # PQ 40000/65535 is ~180 cd/m2 grey: near SDR white after the EETF, never clipped to it.
    grey = to_rgb(out)
    expected = tonemap.sdr_from_source(np.full((1, 3), 40000 / 65535), plan)[0] * 255
    np.testing.assert_allclose(grey.reshape(-1, 3).mean(axis=0), expected, atol=2.5)


# ----------------------------------------------------------------------------- the scaler


def test_scaler_passes_bt709_limited_frames_through_and_converts_others() -> None:
    frame = av.VideoFrame.from_ndarray(sdr_picture(64, 36), format="rgb24").reformat(
        format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
    )
    assert Scaler(64, 36).scale(frame) is frame  # the hot path: no copy, no conversion
    converted = Scaler(64, 36, colour=ScalerColour(src_colorspace="ITU601", src_color_range="MPEG")).scale(frame)
    assert converted is not frame
    # Read as BT.601 and written as BT.709: the picture (as BT.601) is unchanged.
    assert rgb_psnr(to_rgb(converted), to_rgb(frame, matrix="ITU601")) > 40
    assert rgb_psnr(to_rgb(converted), to_rgb(frame)) < 35


# ----------------------------------------------------------------------------- transcodes


@dataclass(frozen=True, slots=True)
class Case:
    make: Callable[[Path], Path]
    overrides: dict[str, Any]


CASES: dict[str, Case] = {
    "bt709_hd": Case(lambda p: make_sdr_clip(p / "bt709.mp4", width=1280, height=720, matrix="ITU709"), {}),
    "bt709_hd_fmp4": Case(
        lambda p: make_sdr_clip(p / "bt709.mp4", width=1280, height=720, matrix="ITU709"),
        {"segment_format": "fmp4"},
    ),
    "untagged_hd": Case(
        lambda p: make_sdr_clip(p / "untagged.mp4", width=1280, height=720, matrix="ITU709", tagged=False), {}
    ),
    "bt601_sd": Case(lambda p: make_sdr_clip(p / "bt601.mp4", width=640, height=480, matrix="ITU601"), {}),
    "mjpeg_full": Case(
        lambda p: make_sdr_clip(
            p / "webcam.avi", width=640, height=360, matrix="ITU601", full_range=True, codec="mjpeg"
        ),
        {},
    ),
    "h264_full_fmp4": Case(
        lambda p: make_sdr_clip(p / "full.mp4", width=640, height=360, matrix="ITU709", full_range=True),
        {"segment_format": "fmp4"},
    ),
    # RGB (QuickTime RLE, like a screen recording): swscale's default RGB -> YUV matrix is BT.601.
    "rgb_qtrle": Case(
        lambda p: make_sdr_clip(p / "screen.mov", width=640, height=360, matrix="ITU709", codec="qtrle", tagged=False),
        {},
    ),
    "hlg_hevc": Case(lambda p: make_hdr_clip(p / "hlg.mp4", transfer="hlg", width=640, height=360), {}),
    "pq_h264_fmp4": Case(
        lambda p: make_hdr_clip(p / "pq.mp4", transfer="pq", width=640, height=360, codec="libx264"),
        {"segment_format": "fmp4"},
    ),
}


@dataclass(frozen=True, slots=True)
class Run:
    source: Path
    out: Path
    result: TranscodeResult

    def frames(self, rung: str) -> list[av.VideoFrame]:
        with av.open(str(self.out / rung / "index.m3u8")) as container:
            return list(container.decode(video=0))

    def source_frames(self) -> list[av.VideoFrame]:
        with av.open(str(self.source)) as container:
            return list(container.decode(video=0))


@pytest.fixture(scope="module")
def transcoded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Run]:
    runs: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in runs:
            case = CASES[name]
            root = tmp_path_factory.mktemp(name)
            source = case.make(root)
            settings: dict[str, Any] = {
                "ladder": LADDER,
                "encoder": EncoderSettings(preset="ultrafast"),
                "segment_s": 1.0,
                "gop_s": 1.0,
            }
            settings.update(case.overrides)
            result = transcoder.transcode(source, root / "out", config=TranscodeConfig(**settings))
            runs[name] = Run(source=source, out=root / "out", result=result)
        return runs[name]

    return get


def _tags(frame: av.VideoFrame) -> tuple[int, int, int, int]:
    return (frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range)


def _resize(rgb: U8, width: int, height: int) -> U8:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return cast(U8, VideoReformatter().reformat(frame, width=width, height=height, interpolation="AREA").to_ndarray())


@pytest.mark.parametrize("name", list(CASES))
def test_every_rung_is_tagged_bt709_limited(transcoded: Callable[[str], Run], name: str) -> None:
    run = transcoded(name)
    videos = [r for r in run.result.renditions if r.kind == "video"]
    assert len(videos) >= 2
    for rung in videos:
        frames = run.frames(rung.name)
        assert len(frames) == 10
        assert {_tags(f) for f in frames} == {BT709_LIMITED}, rung.name
        assert {f.format.name for f in frames} == {"yuv420p"}


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.overrides.get("segment_format") == "fmp4"])
def test_fmp4_init_segment_has_a_bt709_limited_colr_box(transcoded: Callable[[str], Run], name: str) -> None:
    run = transcoded(name)
    for rung in (r for r in run.result.renditions if r.kind == "video"):
        init = (run.out / rung.name / "init.mp4").read_bytes()
        assert [kind for kind, _o, _s in mp4_top_level_boxes(init)][:2] == ["ftyp", "moov"]
        at = init.index(b"colrnclx")
        primaries, transfer, matrix, flags = struct.unpack_from(">HHHB", init, at + 8)
        assert (primaries, transfer, matrix) == (1, 1, 1), rung.name
        assert flags >> 7 == 0  # full_range_flag: limited


def _old_output(frame: av.VideoFrame) -> av.VideoFrame:
    """What the engine wrote before: the source's Y'CbCr values as they were, untagged.

    (A same-size yuv420p rung was the decoded frame itself, a yuvj420p one
    had the same 8-bit values copied into yuv420p.)
    """
    planes = frame.to_ndarray()
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


# name -> (matrix the source really is, PSNR of the top rung read with its tags at least,
#          PSNR of the old output as a BT.601-guessing player shows it at most)
PICTURE_CASES = {
    "bt709_hd": ("ITU709", 45.0, 33.0),
    "untagged_hd": ("ITU709", 45.0, 33.0),
    "bt601_sd": ("ITU601", 41.0, None),
    "mjpeg_full": ("ITU601", 40.0, 31.0),
    "h264_full_fmp4": ("ITU709", 40.0, 30.0),
    "rgb_qtrle": ("ITU709", 40.0, None),
}


@pytest.mark.parametrize("name", list(PICTURE_CASES))
def test_top_rung_shows_the_source_picture(transcoded: Callable[[str], Run], name: str) -> None:
    # The source's RGB is the source decoded with its real matrix and range;
    # the output is decoded with its own tags, as a player would.
    matrix, after_min, before_max = PICTURE_CASES[name]
    run = transcoded(name)
    top = run.result.ladder.rungs[0]
    source = run.source_frames()
    output = run.frames(top.name)
    assert (output[0].width, output[0].height) == (source[0].width, source[0].height)
    for index in (0, 5, 9):
        reference = to_rgb(source[index], matrix=matrix)
        after = rgb_psnr(to_rgb(output[index]), reference)
        assert after >= after_min, (index, after)
        if before_max is not None:
            before = rgb_psnr(to_rgb(_old_output(source[index]), matrix="ITU601", full_range=False), reference)
            assert before <= before_max, (index, before)


@pytest.mark.parametrize("name", list(PICTURE_CASES))
def test_every_rung_shows_the_source_picture(transcoded: Callable[[str], Run], name: str) -> None:
    # Smaller rungs too: each converts the source's colour in its own scaler, exactly once.
    matrix = PICTURE_CASES[name][0]
    run = transcoded(name)
    reference = to_rgb(run.source_frames()[5], matrix=matrix)
    for rung in run.result.ladder.rungs:
        picture = to_rgb(run.frames(rung.name)[5])
        expected = _resize(reference, rung.width, rung.height)
        assert rgb_psnr(picture, expected) > 33.0, rung.name


@pytest.mark.parametrize("name", ["hlg_hevc", "pq_h264_fmp4"])
def test_tone_mapped_hdr_looks_like_the_sdr_grade(transcoded: Callable[[str], Run], name: str) -> None:
    run = transcoded(name)
    source = run.source_frames()
    assert source[0].format.name == "yuv420p10le" and source[0].color_primaries == 9
    for rung in run.result.ladder.rungs:
        frames = run.frames(rung.name)
        for index in (0, 9):
            original = _resize(sdr_picture(640, 360, index), rung.width, rung.height)
            sat_ref, bright_ref = saturation_and_brightness(original)
            sat, bright = saturation_and_brightness(to_rgb(frames[index]))
            assert sat == pytest.approx(sat_ref, rel=0.2), (rung.name, index)
            assert bright == pytest.approx(bright_ref, rel=0.2), (rung.name, index)
    # Before: the 10-bit values cut to 8 bits and shown as BT.709 SDR.
    sat_ref, _ = saturation_and_brightness(sdr_picture(640, 360, 0))
    naive, _ = saturation_and_brightness(to_rgb(source[0].reformat(format="yuv420p"), matrix="ITU709"))
    assert naive < 0.85 * sat_ref


@pytest.mark.parametrize("name", ["bt709_hd", "untagged_hd", "mjpeg_full", "h264_full_fmp4", "rgb_qtrle"])
def test_poster_shows_the_source_picture(transcoded: Callable[[str], Run], name: str) -> None:
    # JPEG is BT.601 full range: an HD poster written with BT.709 values
    # showed ~31 dB; a full-range source's, ~31 dB too.
    matrix = PICTURE_CASES[name][0]
    run = transcoded(name)
    with av.open(str(run.out / "poster.jpg")) as container:
        (poster,) = list(container.decode(video=0))
    picture = to_rgb(poster)
    best = max(
        rgb_psnr(picture, _resize(to_rgb(frame, matrix=matrix), poster.width, poster.height))
        for frame in run.source_frames()
    )
    assert best > 38.0


def _cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transcoder", *map(str, args)],
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_plan_shows_the_colour_decision(transcoded: Callable[[str], Run], tmp_path: Path) -> None:
    lines = {}
    for name in ("hlg_hevc", "bt601_sd", "bt709_hd"):
        done = _cli(transcoded(name).source, "--plan", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        lines[name] = [line for line in done.stdout.splitlines() if line.startswith("colour:")]
        assert len(lines[name]) == 1, done.stdout
    assert lines["hlg_hevc"][0].startswith("colour: bt2020nc/bt2020/arib-std-b67 tv -> bt709/bt709/bt709 tv")
    assert "tone map HLG -> SDR" in lines["hlg_hevc"][0]
    assert "matrix smpte170m -> bt709 (in the scaler), no tone map" in lines["bt601_sd"][0]
    assert lines["bt709_hd"][0].endswith("no conversion, tagged")
    done = _cli(transcoded("pq_h264_fmp4").source, "--plan", "--json", cwd=tmp_path)
    payload = json.loads(done.stdout)
    assert (payload["colour"]["transfer"], payload["colour"]["tone_map"]) == ("smpte2084", "pq")
    assert any(f.startswith("lut3d=") for f in payload["filters"])


def test_bt709_top_rung_loses_only_what_the_encoder_loses(transcoded: Callable[[str], Run], tmp_path: Path) -> None:
    # A BT.709 limited source goes to the encoder untouched: its top rung is as
    # close to the source as the ffmpeg CLI's tagged encode with the same x264
    # settings (~47 dB on this picture at ultrafast), and a lossless encode of
    # the same frames is exact. What separates it from 50 dB is the encode.
    run = transcoded("bt709_hd")
    top = run.result.ladder.rungs[0]
    options = x264_options(
        top, gop_frames=run.result.ladder.gop_frames(top), preset="ultrafast", crf=EncoderSettings().crf
    )
    tags = ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"]
    encodes = {
        "cli": ["-crf", options["crf"], "-maxrate", options["maxrate"], "-bufsize", options["bufsize"]],
        "lossless": ["-qp", "0"],
    }
    for name, rate in encodes.items():
        args = ["-preset", "ultrafast", "-x264-params", options["x264-params"], "-pix_fmt", "yuv420p", *tags]
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(run.source), "-c:v", "libx264"]
        subprocess.run([*command, *rate, *args, str(tmp_path / f"{name}.mp4")], check=True, timeout=120)
    source = run.source_frames()
    ours = run.frames(top.name)
    with av.open(str(tmp_path / "cli.mp4")) as container:
        cli = list(container.decode(video=0))
    with av.open(str(tmp_path / "lossless.mp4")) as container:
        lossless = list(container.decode(video=0))
    for index in (0, 5, 9):
        reference = to_rgb(source[index], matrix="ITU709")
        assert np.array_equal(to_rgb(lossless[index]), reference)
        ours_db, cli_db = rgb_psnr(to_rgb(ours[index]), reference), rgb_psnr(to_rgb(cli[index]), reference)
        assert ours_db == pytest.approx(cli_db, abs=0.1), index
