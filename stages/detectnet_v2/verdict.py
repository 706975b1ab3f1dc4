"""The gate's verdict on an engine, from three pieces of evidence against evaluate.max_map_drop (the limit):
the mAP drop on the validation set, its 95% paired bootstrap interval (bootstrap.py), and the agreement of
the engine's detections with the fp32 model's on the validation and calibration images (agreement.py).

- fail: the interval lies wholly above the limit (the engine lost more than allowed on 97.5% of
  resamples); or it straddles the limit (the labelled set cannot tell), the drop itself is above the limit
  and the engine's boxes agree with fp32's less than evaluate.min_agreement: both say it lost.
- pass: the interval lies wholly at or below the limit; or it straddles the limit, the drop itself is within
  it and the boxes agree at least evaluate.min_agreement (F1 over every box of every image): both say it kept.
- inconclusive: the interval straddles the limit and the drop and the agreement point different ways; or
  the fp32 model finds nothing labelled (mAP 0), which leaves mAP nothing to judge by.
  evaluate.on_inconclusive says what it does: fail (the default) or pass with a warning.
So a pass never has a drop above the limit: the gate is never more lenient than the drop alone.
- off: no limit (evaluate.max_map_drop null).
A model whose APs are all that is known (TAO's own evaluate) has no interval: the point drop decides.

Whether the validation set can resolve the limit at all is said in words: with n objects of a class among
C classes, finding or missing one object moves the mAP by about 1 / (C n)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import bootstrap
from .agreement import Agreement, agreement, combined
from .evaluation import EvaluationSetup, ModelResult

VERDICTS = ("pass", "fail", "inconclusive", "off")


@dataclass(frozen=True)
class Evidence:
    drop: float  # fp32's mAP - the engine's, on the validation set
    reference_map: float
    interval: tuple[float, float] | None  # None: no per-image results (TAO's evaluate reports APs only)
    agreement: float | None  # F1 of the engine's boxes against fp32's, every image; None where not measured
    agreement_boxes: int  # fp32's boxes that F1 counts
    objects: dict[str, int]  # labelled objects of each class in the validation set
    above: float | None = None  # the share of resamples whose drop exceeds the limit


@dataclass(frozen=True)
class Verdict:
    gate: str  # one of VERDICTS
    reason: str
    resolution: str | None = None  # words, where the validation set is too small to resolve the limit


def weigh(setup: EvaluationSetup, engine: ModelResult, reference: ModelResult, objects: dict[str, int],
          limit: float | None = None) -> tuple[Evidence, dict[str, Agreement]]:
    """The evidence from both models' results on the validation images (and their detections on the calibration
    images, where they ran there), and the agreement on each set of images ({"validation", "calibration"})."""
    engine_map = sum(engine.aps.values()) / len(engine.aps)
    reference_map = sum(reference.aps.values()) / len(reference.aps)
    interval, above, agreements = None, None, {}
    if engine.evaluation is not None and reference.evaluation is not None:
        drops = bootstrap.resampled_drops(reference.evaluation.tallies, engine.evaluation.tallies, setup.classes,
                                          setup.metric.mode)
        interval = bootstrap.interval(drops)
        above = round(float(np.mean(drops > limit)), 3) if limit is not None else None
        agreements["validation"] = agreement(engine.evaluation.detections, reference.evaluation.detections,
                                             setup.classes)
        if engine.calibration is not None and reference.calibration is not None:
            agreements["calibration"] = agreement(engine.calibration, reference.calibration, setup.classes)
    overall = combined(agreements.values(), setup.classes) if agreements else None
    evidence = Evidence(round(round(reference_map, 6) - round(engine_map, 6), 6), round(reference_map, 6), interval,
                        overall.f1 if overall else None, overall.overall.reference if overall else 0, objects, above)
    return evidence, agreements


def judge(evidence: Evidence, limit: float | None, min_agreement: float) -> Verdict:
    if limit is None:
        return Verdict("off", "evaluate.max_map_drop is null: the gate is off")
    resolution = resolution_words(evidence.objects, limit)
    if evidence.interval is None:
        gate = "pass" if evidence.drop <= limit else "fail"
        return Verdict(gate, f"drop {evidence.drop:.4f} {'within' if gate == 'pass' else 'above'} {limit} (only APs "
                       "are known: no interval, no agreement)", resolution)
    low, high = evidence.interval
    interval = f"the drop {evidence.drop:.4f} has a 95% interval [{low:.4f}, {high:.4f}]"
    agrees = evidence.agreement is not None and evidence.agreement >= min_agreement
    agreement = ("agreement not measured" if evidence.agreement is None else
                 f"the engine agrees with fp32 at F1 {evidence.agreement:.3f} on {evidence.agreement_boxes} fp32 boxes"
                 f" ({'at least' if agrees else 'below'} evaluate.min_agreement {min_agreement})")
    if evidence.reference_map <= 0:
        return Verdict("inconclusive", "the fp32 model finds none of the labelled objects (mAP 0): the labels give "
                       f"the gate nothing to judge the engine by; {agreement}", resolution)
    if low > limit:
        return Verdict("fail", f"{interval}, wholly above evaluate.max_map_drop {limit}; {agreement}", resolution)
    if high <= limit:
        return Verdict("pass", f"{interval}, wholly within evaluate.max_map_drop {limit}; {agreement}", resolution)
    share = f" ({100 * evidence.above:.0f}% of resamples lose more)" if evidence.above is not None else ""
    straddles = f"{interval}, which straddles evaluate.max_map_drop {limit}{share}: the labels cannot tell"
    within = evidence.drop <= limit
    if within and agrees:
        return Verdict("pass", f"{straddles}; the drop is within it and {agreement}", resolution)
    if not within and evidence.agreement is not None and not agrees:
        return Verdict("fail", f"{straddles}; the drop is above it and {agreement}", resolution)
    needed = _objects_to_narrow(evidence, limit)
    more = f"; about {needed} labelled objects would narrow the interval to one side of it" if needed else ""
    return Verdict("inconclusive", f"{straddles}{more}; the drop is {'within' if within else 'above'} it, but "
                   f"{agreement}", resolution)


def resolution_words(objects: dict[str, int], limit: float) -> str | None:
    """A sentence where one object moves the mAP by more than the limit; None where the set resolves it."""
    if not objects or limit <= 0:
        return None
    classes = len(objects)
    steps = {name: 1.0 / (classes * count) if count else math.inf for name, count in objects.items()}
    coarsest = max(steps, key=lambda name: steps[name])
    if steps[coarsest] <= limit:
        return None
    needed = math.ceil(1.0 / (classes * limit) - 1e-9)
    return (f"the validation set is too small to resolve evaluate.max_map_drop {limit}: it holds {objects[coarsest]} "
            f"labelled {coarsest} object(s), so finding or missing one moves the mAP by about {steps[coarsest]:.3f}; "
            f"about {needed} objects of each class would resolve it")


def _objects_to_narrow(evidence: Evidence, limit: float) -> int | None:
    """Objects in all that would shrink the interval's half-width below the drop's distance to the limit
    (the width falls as one over the square root of the count)."""
    low, high = evidence.interval
    margin, half_width, total = abs(limit - evidence.drop), (high - low) / 2, sum(evidence.objects.values())
    if margin <= 0 or not total:
        return None
    return math.ceil(total * (half_width / margin) ** 2)
