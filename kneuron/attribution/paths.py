"""Integration rules: the points along the straight path from the zero baseline to the activation.

Attribution_i = w_i * sum_k c_k * dP/da_i at a = alpha_k * w.
- "riemann_left" (default, the authors' code): alpha = k/m for k = 0..m-1, c = 1/m.  It includes
  the zero point and leaves out alpha = 1 (spec section 1, item 2).
- "riemann_right" (the paper's equation): alpha = k/m for k = 1..m, c = 1/m.
- "gauss_legendre": Gauss-Legendre nodes mapped to [0, 1]; exact for polynomials of degree
  2m-1 along the path, so far fewer points reach the same integral.
- "trapezoid": alpha = k/(m-1) for k = 0..m-1 (both ends), weights 1/(m-1) halved at the ends;
  second-order accurate where the Riemann sums are first-order.  Needs m >= 2.

FAST_MODES names the fewer-point settings whose error against the default is measured in the
README (benchmarks/bench_fast_modes.py).  (An integration *rule* is not a localization *method*:
those are `kneuron.localization`'s, of which integrated gradients is one.)
"""

from __future__ import annotations

import numpy as np

from kneuron.errors import KneuronError

INTEGRATION_RULES = ("riemann_left", "riemann_right", "gauss_legendre", "trapezoid")
# name -> (rule, steps)
FAST_MODES = {"exact": ("riemann_left", 20), "gl6": ("gauss_legendre", 6), "gl4": ("gauss_legendre", 4),
              "trap7": ("trapezoid", 7), "trap5": ("trapezoid", 5)}


def integration_points(rule: str, steps: int) -> tuple[list[float], list[float]]:
    """(alphas, coefficients) of a quadrature rule with `steps` points."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise KneuronError(f"steps must be a positive integer, got {steps!r}")
    if rule == "riemann_left":
        return [k / steps for k in range(steps)], [1.0 / steps] * steps
    if rule == "riemann_right":
        return [k / steps for k in range(1, steps + 1)], [1.0 / steps] * steps
    if rule == "gauss_legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return [float((xi + 1) / 2) for xi in x], [float(wi / 2) for wi in w]
    if rule == "trapezoid":
        if steps < 2:
            raise KneuronError(f"the trapezoid rule needs steps >= 2, got {steps}")
        h = 1.0 / (steps - 1)
        return [k * h for k in range(steps)], [h / 2 if k in (0, steps - 1) else h for k in range(steps)]
    raise KneuronError(f"unknown integration rule {rule!r}; use one of {', '.join(INTEGRATION_RULES)}")
