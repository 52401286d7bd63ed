"""PURE: which measured rungs a ladder publishes.

On static content (slides, screen recordings) every rung costs about the same
number of bits: a 360p rung can measure as much as the 720p one. Publishing
such a ladder makes a player pay more bits for fewer pixels, and a rung that
saves only a few percent against the next larger one adds storage and CPU
but gives the player no real choice.

The rule (:func:`prune_ladder`), over rungs given largest first:

1. The top rung (most pixels) is always kept.
2. Every other rung is compared with the *next larger kept* rung ``K``. It is
   dropped when it does not have fewer pixels than ``K`` (``"pixels"``), when
   its BANDWIDTH or AVERAGE-BANDWIDTH is not below ``K``'s
   (``"not_cheaper"``), or when it saves less than ``min_saving`` of ``K``'s
   bits on either measure (``"small_saving"``). Otherwise it is kept.

Comparing with the next larger *kept* rung (not the next planned one) is what
makes the published ladder strictly increasing in pixels, BANDWIDTH and
AVERAGE-BANDWIDTH, with at least ``min_saving`` between neighbours, whatever
was dropped in between. Rates are those the master playlist states: video
plus the audio rendition the variant plays with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

KEPT_TOP = "top"  # the largest rung: always published
KEPT = "kept"
DROPPED_PIXELS = "pixels"  # not fewer pixels than the next larger kept rung
DROPPED_NOT_CHEAPER = "not_cheaper"  # costs as much as (or more than) a larger rung
DROPPED_SMALL_SAVING = "small_saving"  # cheaper, but by less than the minimum share


@dataclass(frozen=True, slots=True, kw_only=True)
class RungRates:
    """What was measured of one video rung, as the master playlist would state it."""

    name: str
    width: int
    height: int
    bandwidth_bps: int  # BANDWIDTH: peak of video + its audio
    average_bandwidth_bps: int  # AVERAGE-BANDWIDTH: average of video + its audio

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True, slots=True, kw_only=True)
class RungDecision:
    """Whether one rung is published, and why.

    ``compared_with`` is the next larger kept rung the rule compared it with
    (None for the top rung); ``bandwidth_saving`` and ``average_saving`` are
    the shares of that rung's bits this one saves (1 - mine / theirs; negative
    when it costs more).
    """

    name: str
    kept: bool
    reason: str  # KEPT_TOP, KEPT or one of the DROPPED_* codes
    width: int
    height: int
    bandwidth_bps: int
    average_bandwidth_bps: int
    compared_with: str | None = None
    bandwidth_saving: float | None = None
    average_saving: float | None = None


def _saving(mine: int, theirs: int) -> float:
    return 1.0 - mine / theirs if theirs > 0 else 0.0


def _decision(
    rung: RungRates, *, reason: str, larger: RungRates | None = None, savings: tuple[float, float] | None = None
) -> RungDecision:
    return RungDecision(
        name=rung.name,
        kept=reason in (KEPT, KEPT_TOP),
        reason=reason,
        width=rung.width,
        height=rung.height,
        bandwidth_bps=rung.bandwidth_bps,
        average_bandwidth_bps=rung.average_bandwidth_bps,
        compared_with=larger.name if larger is not None else None,
        bandwidth_saving=savings[0] if savings else None,
        average_saving=savings[1] if savings else None,
    )


def prune_ladder(rates: Sequence[RungRates], *, min_saving: float) -> tuple[RungDecision, ...]:
    """Decide, for each rung of ``rates`` (largest first), whether it is published.

    Returns one decision per rung, in the given order. ``min_saving`` is the
    least share of bits (0 <= min_saving < 1) a rung must save, on BANDWIDTH
    and on AVERAGE-BANDWIDTH, against the next larger kept rung. With
    ``min_saving=0`` only rungs that are not strictly cheaper are dropped.
    The kept rungs are strictly decreasing in pixels, BANDWIDTH and
    AVERAGE-BANDWIDTH, in the given order.
    """
    if not 0.0 <= min_saving < 1.0:
        raise ValueError(f"min_saving must be within [0, 1), got {min_saving}")
    decisions: list[RungDecision] = []
    larger: RungRates | None = None  # the next larger kept rung
    for rung in rates:
        if larger is None:
            decisions.append(_decision(rung, reason=KEPT_TOP))
            larger = rung
            continue
        peak_saving = _saving(rung.bandwidth_bps, larger.bandwidth_bps)
        average_saving = _saving(rung.average_bandwidth_bps, larger.average_bandwidth_bps)
        if rung.pixels >= larger.pixels:
            reason = DROPPED_PIXELS
        elif rung.bandwidth_bps >= larger.bandwidth_bps or rung.average_bandwidth_bps >= larger.average_bandwidth_bps:
            reason = DROPPED_NOT_CHEAPER
        elif min(peak_saving, average_saving) < min_saving:
            reason = DROPPED_SMALL_SAVING
        else:
            reason = KEPT
        decisions.append(
            _decision(rung, reason=reason, larger=larger, savings=(round(peak_saving, 4), round(average_saving, 4)))
        )
        if reason == KEPT:
            larger = rung
    return tuple(decisions)


__all__ = [
    "DROPPED_NOT_CHEAPER",
    "DROPPED_PIXELS",
    "DROPPED_SMALL_SAVING",
    "KEPT",
    "KEPT_TOP",
    "RungDecision",
    "RungRates",
    "prune_ladder",
]
