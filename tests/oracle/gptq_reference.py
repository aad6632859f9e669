"""An independent numpy GPTQ (Frantar et al. 2022, "OPTQ"), written from the
published algorithm as AutoGPTQ / GPTQModel run it (fasterquant), for holding
tools/quantize/gptq_solver.cc to on identical inputs (W, H).

The method, per linear W [rows = out features, cols = in features] with the
Hessian H = 2/n * sum_x x x^T of its calibration inputs:

  * dead columns: diag(H) == 0 -> H[c, c] = 1 and W[:, c] = 0.
  * act-order (desc_act): columns are processed in order of decreasing
    diag(H) (a stable sort, so equal diagonals keep their column order);
    W and H are permuted, everything below runs in that order, and the codes
    are permuted back at the end.
  * damping: H[c, c] += percdamp * mean(diag(H)) (after the dead fix).
  * Hinv = upper Cholesky factor of H^-1 (H^-1 = cholesky_inverse(chol(H))).
  * columns in blocks of `blocksize` (128): within a block each column j is
    quantized, err = (w_j - q_j) / Hinv[j, j] and the remaining columns of the
    block get w_k -= err * Hinv[j, k]; at the end of the block, the columns
    after it get W[:, i2:] -= Err @ Hinv[i1:i2, i2:] (the same update, lazily
    batched).
  * groups: dynamic (GPTQModel's and AutoGPTQ's default, static_groups=False):
    when the processing position p reaches p % group_size == 0, the group's
    parameters come from the weights of positions [p, p + group_size) as they
    stand then (updated by every column before p; in the published code the
    columns of the current block before p are read from W, which misses the
    in-block updates unless the group starts at the block start; with
    group_size a multiple of blocksize the two agree). group_params="published"
    reads them that way, "current" from the up-to-date weights. g_idx[c] = position(c) //
    group_size, so with act-order a group is a set of columns scattered in the
    original order. group_size -1 (one group per row): the published code
    finds the parameters once, from W before the dead columns are zeroed. Static groups: parameters from the original (dead-fixed,
    unupdated, unpermuted) weights of columns [g*G, (g+1)*G), g_idx[c] = c // G
    in the original order, act-order only changes the processing order.
  * find_params per row over a group (GPTQ's Quantizer): xmin = min(min, 0),
    xmax = max(max, 0); sym: xmax = max(|xmin|, xmax), xmin = -xmax if xmin <
    0; both 0 -> [-1, 1]; scale = (xmax - xmin) / maxq; zero = (maxq + 1) / 2
    (sym) or round(-xmin / scale) (asym, float scale).
  * mse > 0 (GPTQ's Quantizer(mse=True), GPTQModel's `mse` norm): each
    group's range is searched (find_params_mse) instead of min/max.
  * Tessera's storage: the scale is stored f16 (an underflow to 0 becomes
    2^-24) and codes are computed against the stored scale, q = clamp(round(w
    / s16) + zero, 0, maxq), round half to even, so the error fed back is the
    one a loader sees: w - s16 * (q - zero).

Everything here is float64 (the solver under test runs float32/float64
arithmetic of its own). Rounding decisions are therefore compared with a
margin: `follow` (optional) holds the solver's own codes/scales/zeros; at a
decision whose reference margin is within `tie_tol` of a rounding boundary
(|frac(w / s) - 0.5| for a code or an asym zero, the distance of the f32 scale
to an f16 rounding midpoint in f16 ulps for a scale), the reference accepts
the solver's choice if it is one of the two neighbours and continues from it
(so one near-tie does not desynchronise the rest); any other disagreement is a
mismatch. The result records how many decisions were settled that way.
"""

import numpy as np


def hessian(x):
    """H = 2/n * sum over the n rows of x of x x^T, float64."""
    x = np.asarray(x, dtype=np.float64)
    return 2.0 / x.shape[0] * (x.T @ x)


def f16_scale(scale):
    """The stored f16 scale of float scale(s) (0 -> 2^-24), as float64."""
    s = np.asarray(scale, dtype=np.float32).astype(np.float16)
    s = np.where(s == 0, np.float16(2.0 ** -24), s)
    return s.astype(np.float64)


def _f16_tie_margin(scale):
    """How far (in f16 ulps of the result) a float scale is from an f16
    rounding midpoint: 0.5 - |x - nearest| / ulp."""
    s = np.asarray(scale, dtype=np.float64)
    h = s.astype(np.float16).astype(np.float64)
    ulp = np.abs(np.spacing(s.astype(np.float16)).astype(np.float64))
    ulp = np.where(ulp == 0, 2.0 ** -24, ulp)
    return 0.5 - np.abs(s - h) / ulp


class Mismatch(AssertionError):
    pass


class _Stats:
    def __init__(self):
        self.code_ties = 0
        self.zero_ties = 0
        self.scale_ties = 0
        self.decisions = 0


def _round_follow(x, forced, tol, stats, what):
    """round-half-even(x), or `forced` where x is within tol of a .5 tie and
    forced is one of the two neighbours. x, forced: 1-D arrays."""
    r = np.rint(x)
    stats.decisions += x.size
    if forced is None:
        return r
    forced = np.asarray(forced, dtype=np.float64)
    differ = forced != r
    if not differ.any():
        return r
    margin = np.abs(np.abs(x - np.floor(x)) - 0.5)
    ok = differ & (margin <= tol) & ((forced == np.floor(x)) | (forced == np.ceil(x)))
    bad = differ & ~ok
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise Mismatch(f"{what}: row {i}: reference {r[i]:.0f} (x = {x[i]!r}, {margin[i]:.3g} from a tie), "
                       f"solver {forced[i]:.0f}")
    stats.__dict__[what + "_ties"] += int(ok.sum())
    return np.where(ok, forced, r)


def _quantize_follow(x, z, maxq, forced, tol, stats):
    """clamp(round-half-even(x) + z, 0, maxq), or the solver's code where x
    is within tol of a .5 tie and its code is the clamp of a neighbour."""
    stats.decisions += x.size
    q = np.clip(np.rint(x) + z, 0, maxq)
    if forced is None:
        return q
    forced = np.asarray(forced, dtype=np.float64)
    differ = forced != q
    if not differ.any():
        return q
    margin = np.abs(np.abs(x - np.floor(x)) - 0.5)
    lo = np.clip(np.floor(x) + z, 0, maxq)
    hi = np.clip(np.ceil(x) + z, 0, maxq)
    ok = differ & (margin <= tol) & ((forced == lo) | (forced == hi))
    bad = differ & ~ok
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise Mismatch(f"code: row {i}: reference {q[i]:.0f} (w/s = {x[i]!r}, zero {z[i]:.0f}, {margin[i]:.3g} "
                       f"from a tie), solver {forced[i]:.0f}")
    stats.code_ties += int(ok.sum())
    return np.where(ok, forced, q)


def find_params_mse(w, bits, sym, norm, forced_scale=None, forced_zero=None, tol=0.0, stats=None):
    """GPTQ's Quantizer(mse=True, norm, grid=100, maxshrink=0.8) per row of w
    [rows, n]: the min/max range shrunk by p = 1 - i/100 (i = 0..79, float32
    as the published code computes it), keeping the first p with the least
    sum |s16 * (q - zero) - w|^norm, the error of the stored f16 scale.
    Returns (None, f16 scale as float64, zero). follow: the solver's pair is
    accepted when it is a candidate whose error is within `tol` (relative)
    of the best."""
    stats = stats or _Stats()
    maxq = (1 << bits) - 1
    w = np.asarray(w, dtype=np.float64)
    w32 = w.astype(np.float32)
    xmin = np.minimum(w32.min(axis=1), np.float32(0))
    xmax = np.maximum(w32.max(axis=1), np.float32(0))
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
    both = (xmin == 0) & (xmax == 0)
    xmin = np.where(both, np.float32(-1), xmin).astype(np.float32)
    xmax = np.where(both, np.float32(1), xmax).astype(np.float32)
    cands_s, cands_z, cands_e = [], [], []
    for i in range(80):
        p = np.float32(1) - np.float32(i) / np.float32(100)
        lo, hi = p * xmin, p * xmax
        scale = (hi - lo) / np.float32(maxq)
        z = np.full(scale.shape, float((maxq + 1) // 2)) if sym else np.rint(-lo / scale).astype(np.float64)
        s16 = f16_scale(scale)
        q = np.clip(np.rint(w / s16[:, None]) + z[:, None], 0, maxq)
        e = np.sum(np.abs(s16[:, None] * (q - z[:, None]) - w) ** norm, axis=1)
        cands_s.append(s16), cands_z.append(z), cands_e.append(e)
    S, Z, E = np.array(cands_s), np.array(cands_z), np.array(cands_e)  # [80, rows]
    best = np.argmin(E, axis=0)  # the first least error
    r = np.arange(S.shape[1])
    s16, z = S[best, r], Z[best, r]
    stats.decisions += s16.size
    if forced_scale is not None:
        fs = np.asarray(forced_scale, dtype=np.float64)
        fz = np.asarray(forced_zero, dtype=np.float64) if forced_zero is not None else z
        differ = (fs != s16) | (fz != z)
        if differ.any():
            emin = E[best, r]
            ok = np.zeros_like(differ)
            for k in np.flatnonzero(differ):
                match = (S[:, k] == fs[k]) & (Z[:, k] == fz[k]) & (E[:, k] <= emin[k] * (1 + tol))
                ok[k] = match.any()
            bad = differ & ~ok
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise Mismatch(f"mse params: row {k}: reference scale {s16[k]!r} zero {z[k]:.0f} "
                               f"(error {E[best[k], k]!r}), solver scale {fs[k]!r} zero {fz[k]:.0f}")
            stats.scale_ties += int(ok.sum())
            s16, z = np.where(ok, fs, s16), np.where(ok, fz, z)
    return None, s16, z


def find_params(w, bits, sym, forced_scale=None, forced_zero=None, tol=0.0, stats=None):
    """Per row of w [rows, n]: (float scale, f16 scale as float64, zero)."""
    stats = stats or _Stats()
    maxq = (1 << bits) - 1
    w32 = np.asarray(w, dtype=np.float64)
    xmin = np.minimum(w32.min(axis=1), 0.0)
    xmax = np.maximum(w32.max(axis=1), 0.0)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
    both = (xmin == 0) & (xmax == 0)
    xmin = np.where(both, -1.0, xmin)
    xmax = np.where(both, 1.0, xmax)
    scale = (xmax - xmin) / maxq
    s16 = f16_scale(scale)
    stats.decisions += scale.size
    if forced_scale is not None:
        fs = np.asarray(forced_scale, dtype=np.float64)
        differ = fs != s16
        if differ.any():
            # one f16 step either side, only at a rounding midpoint
            margin = _f16_tie_margin(scale)
            near = np.abs(fs - s16) <= np.abs(np.spacing(s16.astype(np.float16)).astype(np.float64)) * 1.0001
            ok = differ & near & (margin <= tol)
            bad = differ & ~ok
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise Mismatch(f"scale: row {i}: reference {s16[i]!r} (from {scale[i]!r}), solver {fs[i]!r}")
            stats.scale_ties += int(ok.sum())
            s16 = np.where(ok, fs, s16)
    if sym:
        zero = np.full(scale.shape, float((maxq + 1) // 2))
    else:
        zero = _round_follow(-xmin / scale, forced_zero, tol, stats, "zero")
    return scale, s16, zero


def gptq(W, H, bits=4, group_size=128, sym=True, desc_act=False, static_groups=False, percdamp=0.01,
         blocksize=128, follow=None, tie_tol=1e-3, group_params="published", mse=0.0):
    """GPTQ of W [rows, cols] with Hessian H [cols, cols].

    Returns dict(codes [rows, cols] int, scales [rows, groups] f16 values as
    float64, zeros [rows, groups] int, g_idx [cols] int, ties: counts).
    follow: dict with the solver's codes/scales/zeros/g_idx in the same layout
    (see the module docstring)."""
    W = np.array(W, dtype=np.float64)
    H = np.array(H, dtype=np.float64)
    rows, cols = W.shape
    maxq = (1 << bits) - 1
    G = cols if group_size == -1 else group_size
    groups = (cols + G - 1) // G
    stats = _Stats()

    W_orig = W.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    if desc_act:
        perm = np.argsort(-np.diag(H), kind="stable")
    else:
        perm = np.arange(cols)
    pos = np.empty(cols, dtype=np.int64)  # pos[c] = processing position of column c
    pos[perm] = np.arange(cols)

    if static_groups:
        g_idx = np.arange(cols) // G
    else:
        g_idx = pos // G
    if follow is not None and not np.array_equal(np.asarray(follow["g_idx"]), g_idx):
        raise Mismatch("g_idx differs")

    scales = np.zeros((rows, groups))
    zeros = np.zeros((rows, groups), dtype=np.int64)
    fs = follow["scales"] if follow is not None else None
    fz = follow["zeros"] if follow is not None else None
    fc = np.asarray(follow["codes"])[:, perm] if follow is not None else None

    def params(g, block):
        try:
            if mse > 0:
                _, s16, z = find_params_mse(block, bits, sym, mse, None if fs is None else fs[:, g],
                                            None if fz is None else fz[:, g], tie_tol, stats)
            else:
                _, s16, z = find_params(block, bits, sym, None if fs is None else fs[:, g],
                                        None if fz is None else fz[:, g], tie_tol, stats)
        except Mismatch as e:
            raise Mismatch(f"group {g}: {e}") from None
        scales[:, g] = s16
        zeros[:, g] = z.astype(np.int64)

    if group_size == -1:
        params(0, W_orig)
    elif static_groups:
        for g in range(groups):
            params(g, W[:, g * G:(g + 1) * G])

    Wp = W[:, perm].copy()
    Hp = H[np.ix_(perm, perm)]
    damp = percdamp * np.mean(np.diag(Hp))
    Hp[np.diag_indices(cols)] += damp
    L = np.linalg.cholesky(Hp)
    Linv = np.linalg.inv(L)
    Hinv_full = Linv.T @ Linv
    # upper Cholesky factor U with Hinv_full = U^T U
    U = np.linalg.cholesky(Hinv_full).T

    Qp = np.zeros((rows, cols), dtype=np.int64)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = Wp[:, i1:i2].copy()
        Err = np.zeros_like(W1)
        for i in range(i2 - i1):
            p = i1 + i
            col = perm[p]
            if group_size != -1 and not static_groups and p % G == 0:
                end = min(p + G, cols)
                if group_params == "current":
                    # in-block columns from W1 (updated by this block's
                    # earlier columns), later blocks from Wp
                    cur = np.concatenate([W1[:, i:], Wp[:, i2:end]], axis=1)[:, :end - p]
                else:
                    cur = Wp[:, p:end]  # updated up to the last finished block
                params(p // G, cur)
            g = g_idx[col]
            s, z = scales[:, g], zeros[:, g].astype(np.float64)
            w = W1[:, i]
            q = _quantize_follow(w / s, z, maxq, None if fc is None else fc[:, p], tie_tol, stats)
            Qp[:, p] = q.astype(np.int64)
            d = U[p, p]
            err = (w - s * (q - z)) / d
            W1[:, i:] -= np.outer(err, U[p, i1 + i:i2])
            Err[:, i] = err
        Wp[:, i2:] -= Err @ U[i1:i2, i2:]

    codes = np.zeros_like(Qp)
    codes[:, perm] = Qp
    return {"codes": codes, "scales": scales, "zeros": zeros, "g_idx": g_idx,
            "ties": {"code": stats.code_ties, "zero": stats.zero_ties, "scale": stats.scale_ties,
                     "decisions": stats.decisions}}


def layer_error(W, Wq, H):
    """tr((W - Wq) H (W - Wq)^T) / rows: the proxy loss GPTQ minimises."""
    D = np.asarray(W, dtype=np.float64) - np.asarray(Wq, dtype=np.float64)
    return float(np.einsum("ij,jk,ik->", D, H, D) / D.shape[0])


def dequantize(codes, scales, zeros, g_idx):
    return scales[:, g_idx] * (codes - zeros[:, g_idx])


def rtn(W, bits=4, group_size=128, sym=True):
    """Round to nearest with the same find_params (the baseline)."""
    W = np.asarray(W, dtype=np.float64)
    rows, cols = W.shape
    G = cols if group_size == -1 else group_size
    groups = (cols + G - 1) // G
    maxq = (1 << bits) - 1
    codes = np.zeros((rows, cols), dtype=np.int64)
    scales = np.zeros((rows, groups))
    zeros = np.zeros((rows, groups), dtype=np.int64)
    for g in range(groups):
        blk = W[:, g * G:(g + 1) * G]
        _, s16, z = find_params(blk, bits, sym)
        scales[:, g], zeros[:, g] = s16, z
        codes[:, g * G:(g + 1) * G] = np.clip(np.rint(blk / s16[:, None]) + z[:, None], 0, maxq)
    return {"codes": codes, "scales": scales, "zeros": zeros, "g_idx": np.arange(cols) // G}
