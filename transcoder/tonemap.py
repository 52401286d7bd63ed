"""HDR (HLG, PQ) and BT.2020 to SDR BT.709: a 3D LUT computed with numpy.

PyAV's FFmpeg has no ``zscale`` or ``libplacebo`` and its ``colorspace``
filter knows neither PQ nor HLG, so the engine computes the whole mapping from
source R'G'B' to SDR BT.709 R'G'B' once per run as a 65-point 3D LUT, and the
decoder's filter graph applies it with ``lut3d`` (tetrahedral interpolation):

    scale (source matrix, range -> 16-bit R'G'B') -> lut3d -> scale (BT.709
    matrix, limited range, yuv420p) -> setparams (tags: BT.709)

The mapping, per LUT entry (display-referred throughout, as BT.2408 does it):

1. To display light in cd/m2.
   HLG: BT.2100 inverse OETF to scene light, then the HLG OOTF for a nominal
   1000 cd/m2 display (gamma 1.2 on the BT.2020 luminance): HLG reference
   white (75% signal) becomes 203 cd/m2 (BT.2408).
   PQ: the SMPTE ST 2084 EOTF (absolute cd/m2).
   SDR BT.2020 ("gamut"): the BT.1886 EOTF (gamma 2.4), scaled so SDR
   white is 203 cd/m2; no tone curve follows.
2. Tone curve: the BT.2390 EETF (a Hermite knee in the PQ domain, black
   level 0) from the source peak (HLG: 1000; PQ: MaxCLL or the mastering
   peak, else 1000 cd/m2) to 203 cd/m2, the HDR reference white, applied to
   max(R, G, B) and the pixel scaled by the same ratio (hue and saturation
   kept; no channel clips). Below the knee (about 95 cd/m2 for a 1000 cd/m2
   source) light is unchanged; 203 cd/m2 in the source lands near 170.
3. SDR light = that / 203 (HDR reference white -> SDR peak white).
4. Gamut: the source primaries to BT.709 (3x3 matrix in linear light, from
   the chromaticities), then colours outside BT.709 are desaturated towards
   their own luminance until they fit (luminance and hue kept), then clipped.
5. The BT.1886 inverse EOTF (1/2.4): the SDR signal a BT.709 display shows
   as that light.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt

from .colour import ColourPlan

F64 = npt.NDArray[np.float64]

LUT_SIZE = 65  # lut3d's usual maximum; 65 points keep PQ's steep blacks within 8-bit steps
REFERENCE_WHITE_NITS = 203.0  # BT.2408 HDR reference white = SDR peak white after mapping
HLG_DISPLAY_PEAK_NITS = 1000.0
HLG_GAMMA = 1.2  # BT.2100 HLG system gamma at 1000 cd/m2
SDR_GAMMA = 2.4  # BT.1886

# CIE 1931 xy chromaticities of the red, green and blue primaries and white (D65).
_CHROMATICITIES = {
    "bt709": ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)),
    "bt2020": ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),
    "smpte432": ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)),  # Display P3
}
_D65 = (0.3127, 0.3290)

# SMPTE ST 2084 constants.
_M1 = 2610 / 16384
_M2 = 2523 / 4096 * 128
_C1 = 3424 / 4096
_C2 = 2413 / 4096 * 32
_C3 = 2392 / 4096 * 32
# ITU-R BT.2100 HLG constants.
_A = 0.17883277
_B = 1 - 4 * _A
_C = 0.5 - _A * np.log(4 * _A)


def rgb_to_xyz(primaries: str) -> F64:
    """The linear RGB -> XYZ matrix of ``primaries`` (white D65, Y of white = 1)."""
    xy = _CHROMATICITIES[primaries]
    cols = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in xy]).T
    wx, wy = _D65
    white = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    scale = np.linalg.solve(cols, white)
    return cols * scale


def primaries_matrix(src: str, dst: str) -> F64:
    """Linear-light RGB conversion from ``src`` primaries to ``dst`` primaries."""
    matrix: F64 = np.linalg.solve(rgb_to_xyz(dst), rgb_to_xyz(src)).astype(np.float64)
    return matrix


def luminance_weights(primaries: str) -> F64:
    """The Y row of the RGB -> XYZ matrix (BT.2020: 0.2627, 0.6780, 0.0593)."""
    weights: F64 = rgb_to_xyz(primaries)[1]
    return weights


def pq_eotf(signal: F64) -> F64:
    """SMPTE ST 2084: PQ signal [0, 1] -> display light in cd/m2."""
    p = np.power(np.clip(signal, 0.0, 1.0), 1 / _M2)
    return 10000.0 * np.power(np.maximum(p - _C1, 0.0) / (_C2 - _C3 * p), 1 / _M1)


def pq_inverse_eotf(nits: F64) -> F64:
    """SMPTE ST 2084: display light in cd/m2 -> PQ signal [0, 1]."""
    y = np.power(np.clip(nits / 10000.0, 0.0, 1.0), _M1)
    return np.power((_C1 + _C2 * y) / (1 + _C3 * y), _M2)


def hlg_inverse_oetf(signal: F64) -> F64:
    """BT.2100 HLG: signal [0, 1] -> normalised scene light [0, 1]."""
    e = np.clip(signal, 0.0, 1.0)
    low = e * e / 3
    high = (np.exp((e - _C) / _A) + _B) / 12
    return np.where(e <= 0.5, low, high)


def hlg_oetf(scene: F64) -> F64:
    """BT.2100 HLG: normalised scene light [0, 1] -> signal [0, 1]."""
    e = np.clip(scene, 0.0, 1.0)
    low = np.sqrt(3 * e)
    high = _A * np.log(np.maximum(12 * e - _B, 1e-12)) + _C
    return np.where(e <= 1 / 12, low, high)


def bt2390_eetf(nits: F64, *, source_peak: float, target_peak: float) -> F64:
    """The BT.2390 EETF (black level 0): light in cd/m2 -> light in cd/m2, at most ``target_peak``.

    Identity below the knee; a Hermite spline in the PQ domain from the knee
    to ``source_peak``, which lands on ``target_peak``. Light above
    ``source_peak`` maps to ``target_peak``.
    """
    if source_peak <= target_peak:
        return np.minimum(nits, target_peak)
    src_pq = float(pq_inverse_eotf(np.array(source_peak)))
    e1 = np.clip(pq_inverse_eotf(nits) / src_pq, 0.0, 1.0)
    max_lum = float(pq_inverse_eotf(np.array(target_peak))) / src_pq
    ks = 1.5 * max_lum - 0.5
    t = (e1 - ks) / (1 - ks)
    t2, t3 = t * t, t * t * t
    spline = (2 * t3 - 3 * t2 + 1) * ks + (t3 - 2 * t2 + t) * (1 - ks) + (-2 * t3 + 3 * t2) * max_lum
    e2 = np.where(e1 < ks, e1, spline)
    return pq_eotf(e2 * src_pq)


def fit_gamut(rgb: F64, weights: F64) -> F64:
    """Bring linear RGB into [0, 1] by desaturating towards each pixel's luminance.

    Luminance (``weights``) and hue are kept; a pixel already inside is unchanged.
    """
    y = np.clip(rgb @ weights, 0.0, 1.0)[..., None]
    low = rgb.min(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(low < 0, y / (y - low), 1.0)
    rgb = y + np.clip(t, 0.0, 1.0) * (rgb - y)
    high = rgb.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(high > 1, (1 - y) / (high - y), 1.0)
    rgb = y + np.clip(t, 0.0, 1.0) * (rgb - y)
    return np.clip(rgb, 0.0, 1.0)


def sdr_from_source(signal: F64, plan: ColourPlan) -> F64:
    """Map source R'G'B' signals (..., 3) in [0, 1] to SDR BT.709 R'G'B' in [0, 1] (steps 1-5 above)."""
    weights = luminance_weights(plan.primaries)
    if plan.tone_map == "hlg":
        scene = hlg_inverse_oetf(signal)
        ys = np.maximum(scene @ weights, 0.0)[..., None]
        nits = HLG_DISPLAY_PEAK_NITS * np.power(ys, HLG_GAMMA - 1) * scene
    elif plan.tone_map == "pq":
        nits = pq_eotf(signal)
    else:
        nits = REFERENCE_WHITE_NITS * np.power(np.clip(signal, 0.0, 1.0), SDR_GAMMA)
    if plan.tone_map in ("hlg", "pq"):
        peak = HLG_DISPLAY_PEAK_NITS if plan.tone_map == "hlg" else plan.peak_nits
        top = nits.max(axis=-1, keepdims=True)
        mapped = bt2390_eetf(top, source_peak=peak, target_peak=REFERENCE_WHITE_NITS)
        with np.errstate(divide="ignore", invalid="ignore"):
            nits = np.where(top > 0, nits * (mapped / top), 0.0)
    linear = nits / REFERENCE_WHITE_NITS
    linear = linear @ primaries_matrix(plan.primaries, "bt709").T
    linear = fit_gamut(linear, luminance_weights("bt709"))
    return np.power(linear, 1 / SDR_GAMMA)


def build_lut(plan: ColourPlan, size: int = LUT_SIZE) -> F64:
    """The 3D LUT of ``plan`` as a (size, size, size, 3) array indexed [b, g, r] (the .cube order)."""
    axis = np.linspace(0.0, 1.0, size)
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    return sdr_from_source(np.stack([r, g, b], axis=-1), plan)


def cube_text(lut: F64) -> str:
    """``lut`` (indexed [b, g, r]) as an Adobe/Resolve .cube file: red varies fastest."""
    size = lut.shape[0]
    values = lut.reshape(-1).tolist()
    # One %-format over all rows: ~3x faster than np.savetxt's per-row loop.
    rows = ("%.6f %.6f %.6f\n" * (len(values) // 3)) % tuple(values)
    return f'TITLE "transcoder SDR BT.709"\nLUT_3D_SIZE {size}\n{rows}'


@contextmanager
def cube_file(plan: ColourPlan) -> Iterator[str]:
    """A temporary .cube file of ``plan``'s LUT; removed on exit.

    ``lut3d`` reads its file when the filter graph is configured, so the file
    only has to live until then.
    """
    fd, path = tempfile.mkstemp(prefix="transcoder-", suffix=".cube")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(cube_text(build_lut(plan)))
        yield path
    finally:
        os.unlink(path)


def tone_map_filters(plan: ColourPlan, cube_path: str) -> list[tuple[str, str]]:
    """The filter chain that applies ``plan``'s LUT: source YUV -> SDR BT.709 limited yuv420p.

    16-bit R'G'B' in between keeps 10-bit sources' precision through the LUT.
    """
    in_range = "pc" if plan.full_range else "tv"
    # The filter's option parser splits on ':' and reads backslashes and quotes:
    # escape them, whatever the temp directory is called.
    path = cube_path.replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:")
    return [
        ("scale", f"in_color_matrix={plan.filter_matrix}:in_range={in_range}"),
        ("format", "gbrp16le"),
        ("lut3d", f"file={path}:interp=tetrahedral"),
        ("scale", "out_color_matrix=bt709:out_range=tv"),
        ("format", "yuv420p"),
        ("setparams", "colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv"),
    ]


def describe_filters(plan: ColourPlan) -> list[str]:
    """The tone-map chain as ``--plan`` shows it (the LUT file named by its content)."""
    if plan.tone_map == "none":
        return []
    return [f"{n}={a}" if a else n for n, a in tone_map_filters(plan, f"<{plan.tone_map}-to-sdr.cube>")]
