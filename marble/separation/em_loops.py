"""The per-source Wiener EM's elementwise work (one iteration, PROTOCOL §4) as two compiled loops for the CPU.

torch computes the EM as ~50 complex128 operations per slice of bins, each a pass over memory; these loops do the
same arithmetic element by element, in cache. They are **the complex formulas as torch's vectorised CPU kernels
round them**, written out in real arithmetic (numba emits each ``*``, ``+``, ``-``, ``/`` as one IEEE operation,
never fused, never reordered):

* a complex product ``(a + ib)(c + id)`` is ``(ac - bd, ad + bc)``, each product rounded before the sum (AVX2 and
  AVX-512 alike: two multiplies and a horizontal subtract);
* products with an exactly real operand are the real products (``(v + 0i)(x + iy) = (vx, vy)``), ``y conj(y)``
  is ``a^2 + b^2`` with an imaginary part of exactly 0, ``y1 conj(y0)`` is ``conj(y0 conj(y1))``, and
  ``1 / d`` of a real ``d`` is a real reciprocal (``Tensor.__rdiv__``);
* the sums over a bin's frames stay torch's (the same cascade order over frames as the complex sums: checked).

That equality holds for slices whose bins are contiguous and a multiple of 8 (torch's vectorised loop then has no
scalar tail, where a compiler may fuse a multiply-add), which :meth:`marble.separation.WienerBlock.target` checks
before using them; ``tests/test_separation.py`` compares the result with the plain complex formulas bit for bit.
"""

from __future__ import annotations

def compiled():
    """``(stats, target)``: :func:`_stats` and :func:`_target` compiled by numba (:func:`marble.compiled.cpu_loops`;
    a division by zero gives inf, as torch's), or None without numba (torch's complex path then runs)."""
    from marble.compiled import cpu_loops

    return cpu_loops(_stats, _target, error_model="numpy")


def _stats(mag, cos, sin, mix, s, out):
    """The EM's per-element statistics of the target and the residual: ``mag`` ``[n, f]`` (float32 or float64, the
    target's magnitude), ``cos``/``sin`` ``[2, n, f]`` (the mixture phase's), ``mix`` ``[2, n, f, 2]`` (its real
    and imaginary parts), ``s`` = 1 / scale. Writes ``out`` ``[10, n, f]``: for the target, then the residual
    (``y = (a + ib, c + id)``, the two channels, scaled): ``y0 conj(y0)`` (real), ``y1 conj(y1)``, the power
    ``v``, and ``y0 conj(y1)``'s real and imaginary parts."""
    n, f = mag.shape
    for t in range(n):
        for k in range(f):
            m = float(mag[t, k])
            tr0 = m * cos[0, t, k]
            ti0 = m * sin[0, t, k]
            tr1 = m * cos[1, t, k]
            ti1 = m * sin[1, t, k]
            for j in range(2):  # the target, then the residual (mixture minus target), each scaled
                if j == 0:
                    a, b, c, d = tr0 * s, ti0 * s, tr1 * s, ti1 * s
                else:
                    a = (mix[0, t, k, 0] - tr0) * s
                    b = (mix[0, t, k, 1] - ti0) * s
                    c = (mix[1, t, k, 0] - tr1) * s
                    d = (mix[1, t, k, 1] - ti1) * s
                a2, b2, c2, d2 = a * a, b * b, c * c, d * d
                s0 = a2 + b2
                out[5 * j, t, k] = s0
                out[5 * j + 1, t, k] = c2 + d2
                out[5 * j + 2, t, k] = ((s0 + c2) + d2) / 2.0
                out[5 * j + 3, t, k] = a * c + b * d
                out[5 * j + 4, t, k] = b * c - a * d


def _target(v0, v1, r, x, sq, scale, out):
    """The target's new estimate: ``v0``/``v1`` ``[n, f]`` the target's and the residual's power, ``r`` ``[8, f]``
    their spatial covariances per bin (target: ``R00``, ``R11``, ``Re R01``, ``Im R01``; then the residual's),
    ``x`` ``[2, n, f, 2]`` the scaled mixture, ``sq`` = sqrt(eps). The mixture covariance ``Cxx = sq I + v0 R0 + v1
    R1``, its inverse, the gain ``G = v0 R0 Cxx^-1`` and ``G x``, times ``scale`` into ``out`` ``[2, n, f, 2]``."""
    n, f = v0.shape
    for t in range(n):
        for k in range(f):
            w0 = v0[t, k]
            w1 = v1[t, k]
            r00, r11, al, be = r[0, k], r[1, k], r[2, k], r[3, k]
            c00 = (sq + w0 * r00) + w1 * r[4, k]
            c11 = (sq + w0 * r11) + w1 * r[5, k]
            p = w0 * al + w1 * r[6, k]  # Cxx01 = p + iq, Cxx10 = p - iq
            q = w0 * be + w1 * r[7, k]
            inv = 1.0 / (c00 * c11 - (p * p + q * q))
            P, Q, i00, i11 = p * inv, q * inv, c11 * inv, c00 * inv  # Cxx^-1 = [[i00, -P - iQ], [-P + iQ, i11]]
            apbq = al * P + be * Q
            aqbp = al * Q - be * P
            g00r, g00i = w0 * (r00 * i00 - apbq), w0 * aqbp
            g01r, g01i = w0 * (al * i11 - r00 * P), w0 * (be * i11 - r00 * Q)
            g10r, g10i = w0 * (al * i00 - r11 * P), w0 * (r11 * Q - be * i00)
            g11r, g11i = w0 * (r11 * i11 - apbq), -g00i
            x0r, x0i, x1r, x1i = x[0, t, k, 0], x[0, t, k, 1], x[1, t, k, 0], x[1, t, k, 1]
            out[0, t, k, 0] = ((g00r * x0r - g00i * x0i) + (g01r * x1r - g01i * x1i)) * scale
            out[0, t, k, 1] = ((g00r * x0i + g00i * x0r) + (g01r * x1i + g01i * x1r)) * scale
            out[1, t, k, 0] = ((g10r * x0r - g10i * x0i) + (g11r * x1r - g11i * x1i)) * scale
            out[1, t, k, 1] = ((g10r * x0i + g10i * x0r) + (g11r * x1i + g11i * x1r)) * scale
