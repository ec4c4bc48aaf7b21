"""Triton kernels of the fused decoder step (policy/accel/fused.py); imported only through
``fused._kernels`` (which loads this file once compiled and once for Triton's interpreter).

Two kernels cover every layer of ``Transformer.decode``:
- ``linear``: out = act(LN(x) @ W^T + b) + res, the layer norm, the bias, GELU and the
  residual add fused around one matmul (with a layer norm the row block is loaded once, whole);
  with ``STEP`` (the output head) a DDIM step follows in the epilogue (``Sampler.affine``):
  x0 = clip(p xs + q out), x_next = ca x0 + cb (u xs + v out) from the noisy sample xs; ``res`` rows repeat every ``res_rows`` rows (the
  positional embedding is one horizon's rows for every sample);
- ``attend_project``: out = res + (softmax(q k^T / sqrt(D) + mask) v) @ Wo^T + bo, all heads of
  one sample's queries in one program, with the output projection and the residual add;
  the mask lets query t see key s iff s <= t + OFFSET (0: causal self-attention; 1: the
  memory mask t >= s - 1 of docs/references.md §1).
All arithmetic is float32; ``PREC`` is ``tl.dot``'s input precision ("ieee": float32 FMAs,
"tf32": tensor cores with 10-bit mantissa inputs). ``tl.dot`` needs every dimension >= 16,
so the block sizes are at least 16 and short dimensions (7 action dims, 3 memory tokens) are
masked loads of zeros.
"""
import triton
import triton.language as tl


@triton.jit
def linear(x_ptr, w_ptr, b_ptr, lnw_ptr, lnb_ptr, res_ptr, out_ptr, R, N, res_rows, eps,
           xs_ptr, p, q, u, v, ca, cb, clip,
           K: tl.constexpr, HAS_LN: tl.constexpr, GELU: tl.constexpr, HAS_RES: tl.constexpr,
           STEP: tl.constexpr, CLIP: tl.constexpr,
           BR: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
    rows = tl.program_id(1) * BR + tl.arange(0, BR)
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    rmask, nmask = rows < R, cols < N
    if HAS_LN:
        # the whole row block in registers once (K <= 512 with a layer norm, checked by the
        # caller): statistics, normalization and one matmul, no second trip to memory
        ks = tl.arange(0, BK)
        kmask = ks < K
        m = rmask[:, None] & kmask[None, :]
        xk = tl.load(x_ptr + rows[:, None] * K + ks[None, :], mask=m, other=0.0)
        mean = tl.sum(xk, axis=1) / K
        d = tl.where(m, xk - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / K + eps)
        g = tl.load(lnw_ptr + ks, mask=kmask, other=0.0)
        beta = tl.load(lnb_ptr + ks, mask=kmask, other=0.0)
        xk = d * rstd[:, None] * g[None, :] + beta[None, :]
        wk = tl.load(w_ptr + cols[:, None] * K + ks[None, :], mask=nmask[:, None] & kmask[None, :], other=0.0)
        acc = tl.dot(xk, tl.trans(wk), input_precision=PREC)
    else:
        acc = tl.zeros([BR, BN], tl.float32)
        for k0 in tl.static_range(0, K, BK):
            ks = k0 + tl.arange(0, BK)
            kmask = ks < K
            xk = tl.load(x_ptr + rows[:, None] * K + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            wk = tl.load(w_ptr + cols[:, None] * K + ks[None, :], mask=nmask[:, None] & kmask[None, :], other=0.0)
            acc += tl.dot(xk, tl.trans(wk), input_precision=PREC)
    acc += tl.load(b_ptr + cols, mask=nmask, other=0.0)[None, :]
    if GELU:  # exact (erf) GELU, as nn.GELU()
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    omask = rmask[:, None] & nmask[None, :]
    if HAS_RES:
        acc += tl.load(res_ptr + (rows % res_rows)[:, None] * N + cols[None, :], mask=omask, other=0.0)
    if STEP:  # a sampler step on the network output (Sampler.affine): x_next from the sample xs
        xs = tl.load(xs_ptr + rows[:, None] * N + cols[None, :], mask=omask, other=0.0)
        x0 = p * xs + q * acc
        if CLIP:
            x0 = tl.minimum(tl.maximum(x0, -clip), clip)
        acc = ca * x0 + cb * (u * xs + v * acc)
    tl.store(out_ptr + rows[:, None] * N + cols[None, :], acc, mask=omask)


@triton.jit
def attend_project(q_ptr, k_ptr, v_ptr, wo_ptr, bo_ptr, res_ptr, out_ptr, T, S, scale,
                   sq_b, sq_t, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s,
                   C: tl.constexpr, H: tl.constexpr, D: tl.constexpr, OFFSET: tl.constexpr,
                   BT: tl.constexpr, BS: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr):
    b = tl.program_id(1)
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    ts, ss, ds = tl.arange(0, BT), tl.arange(0, BS), tl.arange(0, D)
    tmask, smask = ts < T, ss < S
    allowed = (ss[None, :] <= ts[:, None] + OFFSET) & smask[None, :]  # key 0 is always allowed: no empty row
    acc = tl.zeros([BT, BN], tl.float32)
    for h in tl.static_range(H):
        q = tl.load(q_ptr + b * sq_b + ts[:, None] * sq_t + h * D + ds[None, :], mask=tmask[:, None], other=0.0)
        k = tl.load(k_ptr + b * sk_b + h * sk_h + ss[:, None] * sk_s + ds[None, :], mask=smask[:, None], other=0.0)
        v = tl.load(v_ptr + b * sv_b + h * sv_h + ss[:, None] * sv_s + ds[None, :], mask=smask[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
        s = tl.where(allowed, s, float("-inf"))
        p = tl.exp(s - tl.max(s, axis=1)[:, None])
        p = p / tl.sum(p, axis=1)[:, None]
        o = tl.dot(p, v, input_precision=PREC)  # (BT, D): head h's output
        wo = tl.load(wo_ptr + cols[:, None] * C + h * D + ds[None, :])  # (BN, D): its columns of the projection
        acc += tl.dot(o, tl.trans(wo), input_precision=PREC)
    out_rows = b * T + ts
    omask = tmask[:, None] & (cols[None, :] < C)
    acc += tl.load(bo_ptr + cols)[None, :]
    acc += tl.load(res_ptr + out_rows[:, None] * C + cols[None, :], mask=omask, other=0.0)
    tl.store(out_ptr + out_rows[:, None] * C + cols[None, :], acc, mask=omask)
