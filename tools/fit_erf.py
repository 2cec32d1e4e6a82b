#!/usr/bin/env python
"""Re-derives the rational approximation of erf used by bertlib/activations.py.

erf(z) ~ z P(z^2) / Q(z^2) on 0 <= z <= 3.925 (beyond, erf rounds to 1 in float32), P and
Q of degree 5, Q(0) = 1. The fit is linearised least squares on (z P - erf Q) / (erf Q),
re-weighted toward the largest errors (Lawson's iteration) so it approaches the minimax
relative error. Prints the coefficients and the error of float32 GELU built on them.
"""

import numpy as np
import scipy.special

CLIP = 3.925


def fit(degree_p=5, degree_q=5, nodes=30000, iterations=60):
    k = np.arange(nodes)
    z = CLIP * 0.5 * (1.0 - np.cos(np.pi * (k + 0.5) / nodes))
    v = (z / CLIP) ** 2            # scaled variable for a well-conditioned solve
    f = scipy.special.erf(z)
    q_prev = np.ones_like(z)
    weights = np.ones_like(z)
    for iteration in range(iterations):
        columns = [z * v ** i for i in range(degree_p + 1)]
        columns += [-f * v ** j for j in range(1, degree_q + 1)]
        a = np.stack(columns, axis=1)
        scale = np.sqrt(weights) / (f * q_prev)
        solution = np.linalg.lstsq(a * scale[:, None], f * scale, rcond=None)[0]
        p = solution[:degree_p + 1]
        q = np.concatenate([[1.0], solution[degree_p + 1:]])
        q_prev = np.polynomial.polynomial.polyval(v, q)
        error = np.abs(z * np.polynomial.polynomial.polyval(v, p) / q_prev - f) / f
        if iteration > 5:
            weights = weights * (error / error.max() + 1e-3)
            weights /= weights.sum()
    # Back from v = z^2 / CLIP^2 to powers of s = z^2.
    p = p / (CLIP * CLIP) ** np.arange(degree_p + 1)
    q = q / (CLIP * CLIP) ** np.arange(degree_q + 1)
    return p, q, error.max()


def main():
    p, q, relative = fit()
    print('max relative error of erf: %.2e' % relative)
    print('_ERF_P = (%s)' % ', '.join('%.17g' % c for c in p))
    print('_ERF_Q = (%s)' % ', '.join('%.17g' % c for c in q))
    x = np.linspace(-30, 30, 2000001).astype(np.float32).astype(np.float64)
    z = np.clip(x * np.sqrt(0.5), -CLIP, CLIP)
    erf = z * np.polynomial.polynomial.polyval(z * z, p) / \
        np.polynomial.polynomial.polyval(z * z, q)
    gelu = (0.5 * x * (1.0 + erf)).astype(np.float32)
    exact = x * scipy.special.ndtr(x)
    print('float32 GELU error / max(1, |x|): %.2e'
          % (np.abs(gelu - exact) / np.maximum(1.0, np.abs(x))).max())


if __name__ == '__main__':
    main()
