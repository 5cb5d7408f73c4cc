"""Every tolerance of the check, named in one place.

The verdict thresholds are per parameter dtype (like JAX's per-dtype table); everything else is a
property of the noise model or of the search, and lives in the one frozen :data:`TOLERANCES`.
Change a number here and every path of the check sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

#: Thresholds on formula (2) by parameter dtype. float64 is the documents' 1e-7; lower precisions
#: are looser because a correct float32 backprop carries ~1e-7 relative round-off per operation.
THRESHOLDS: Dict[str, float] = {"float64": 1e-7, "float32": 1e-4, "float16": 1e-2}


@dataclass(frozen=True)
class Tolerances:
    """The constants of the noise model and of the search (see the README's "How the check stays honest")."""

    #: Bound on the round-off of one loss difference, in units of (loss precision × |loss|).
    roundoff: float = 4.0
    #: Two losses at the same point differ by randomness when they differ by more than
    #: ``max(randomness_rel × float64's epsilon, roundoff × the loss's precision) × |loss| + randomness_abs``.
    randomness_rel: float = 1e3
    randomness_abs: float = 1e-13
    #: The chance, per tensor and check, that a direction check calls right an error exactly at the
    #: threshold (the sampling risk of random projections; larger errors are missed far less often).
    false_pass_rate: float = 1e-4
    #: The chance, per tensor and check, that a direction check calls wrong an error of the threshold's size
    #: (the projections' luck the other way: a few directions can overstate an error below the threshold).
    false_alarm_rate: float = 1e-2
    #: At most this many suspicious probes per check are measured twice at the same step (randomness).
    repeats: int = 3
    #: A probe is re-measured when its gap plus noise exceeds this share of a threshold-sized gap.
    suspicious_share: float = 0.1
    #: A direction probe whose noise exceeds this share of a threshold-sized gap is replaced by a fresh one.
    useful_noise_share: float = 0.2
    #: The re-measurement divides the step by this, at most ``refine_levels`` times.
    refine_ratio: float = 4.0
    refine_levels: int = 4
    #: Two estimates at successive steps agree when they differ by less than their round-off plus
    #: this share of the threshold.
    agreement_share: float = 0.25
    #: The step may grow up to this factor when the loss's round-off would swamp the threshold.
    max_step_growth: float = 16.0
    #: A step is large enough when round-off is below ``1 / resolution`` of a threshold-sized gap.
    resolution: float = 20.0
    #: A gradient whose entries are below ``zero_roundoff`` × its dtype's epsilon × the model's RMS
    #: gradient entry is zero up to round-off; it is judged against ``zero_gradient_floor`` × that RMS
    #: entry instead of its own (round-off) size.
    zero_roundoff: float = 1e3
    zero_gradient_floor: float = 1e-2
    #: A loss whose values are all multiples of a power of two far coarser than their precision × their
    #: size rounds to that grid (large terms that cancel): the grid is its resolution, once the values make
    #: chance unlikely: a value computed to its precision sits on a grid r× coarser by a chance of about
    #: 1/r, so the kept values' log2(r) must sum to ``grid_evidence_bits`` (four values at 16×, one at
    #: 65536×). The first ``grid_values`` distinct values are kept.
    grid_evidence_bits: float = 16.0
    grid_values: int = 4
    #: A tensor found wrong only because the loss never changed when it moved is moved once this many
    #: times further: a loss that changes there rounds (inconclusive), one that stays flat ignores it.
    flat_step_growth: float = 1e3
    #: Direction probes per tensor: first batch, and most (useful ones; as many again may be replaced).
    probes_first: int = 2
    probes_max: int = 8
    #: Joint screens over all tensors: first batch and most.
    screens_first: int = 2
    screens_max: int = 4
    #: Screens may always use this many bytes of working memory, whatever the largest tensor's size.
    screen_memory_floor: int = 8 << 20
    #: Per-tensor weights in a screen may move a step by at most this factor either way.
    screen_weight_range: float = 4.0
    #: Loss evaluations for ``sample="auto"``: ``max(budget, budget_per_tensor × tensors)``.
    budget: int = 400
    budget_per_tensor: int = 20
    #: ``sample="auto"`` runs the documents' full loop up to this many entries in all.
    full_loop_max_entries: int = 100
    #: At most this many coordinates per tensor are re-measured at smaller steps.
    recheck_cap: int = 16
    #: In bisection, a half that carries this share of the error (squared) is followed alone.
    clear_share: float = 0.9
    #: In bisection, both halves carrying at least this share for ``spread_levels`` levels: spread.
    spread_share: float = 0.2
    spread_levels: int = 2
    #: Coordinates measured to show the largest entries of a spread error.
    spread_samples: int = 4


TOLERANCES = Tolerances()


def threshold_for(dtype: np.dtype) -> float:
    """The verdict threshold on formula (2) for parameters of this dtype (see :data:`THRESHOLDS`)."""
    dt = np.dtype(dtype)
    if dt.name in THRESHOLDS:
        return THRESHOLDS[dt.name]
    bits = np.finfo(dt).bits
    return THRESHOLDS["float64"] if bits >= 64 else THRESHOLDS["float32"] if bits >= 32 else THRESHOLDS["float16"]


def precision_of(dtype: np.dtype) -> float:
    """Machine epsilon of a float dtype (float64's for anything that is not a float)."""
    dt = np.dtype(dtype)
    return float(np.finfo(dt).eps) if dt.kind == "f" else float(np.finfo(np.float64).eps)
