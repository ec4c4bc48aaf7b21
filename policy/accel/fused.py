"""Fused decoder step: ``Transformer.decode`` in 6 Triton kernels per layer (GPU deploy path).

Why: a replayed CUDA graph of the 9M DP-T spends its time in kernels, not in launches: one
eager ``decode`` step is 156 kernels (``launch/bench/gpu_kernels.py``: cuBLAS gemv-style matmuls,
layer norms, adds, GELUs and one attention kernel per attention), ~3 us each on an H100, so a
DDIM-10 chunk cannot get under ~5 ms however it is launched. Here a step is
``2 + 6 * n_layer`` kernels (50 for 8 layers), each fusing what sits around one matmul:

    x  = input_emb(sample) + pos_emb                      linear (residual rows repeat per sample)
    per layer:
      qkv = [q; k; v](LN_sa(x))                           linear with LN (q, kv weights concatenated)
      x   = x + proj(attention(q, k, v, causal))          attend_project (all heads, proj, residual)
      q   = ca.q(LN_ca(x))                                linear with LN
      x   = x + proj(attention(q, memory k, v, t>=s-1))   attend_project (the run's memory)
      h   = GELU(fc1(LN_ffn(x)))                          linear with LN and GELU
      x   = x + fc2(h)                                    linear with residual
    out = head(LN_f(x))                                   linear with LN [+ a DDIM step]

The cross-attention memory (keys and values of every step of a run) stays the eager
``Transformer.run_memory``, once per run. Weights are read from the network when the decoder
is built (the q and kv projections of self-attention concatenated): build it after the
weights are final, in eval mode. No branch hook: a block cache cannot run through it.

Measured on an H200 (`python3 launch/bench/gpu_kernels.py --fused`): 229 us of kernel time per 9M
step at tf32 against eager's 451 us; at ieee 603 us (float32 products without tensor cores lose
to cuBLAS). docs/results/gpu.md has the chunk latencies.

``precision``: "ieee" (float32 products, equal to eager within float rounding; tests check
2e-5 on the CPU through Triton's interpreter, 1e-4 relative on a GPU) or "tf32" (tensor-core
products). On a CPU
tensor the kernels run in Triton's interpreter (numpy; slow, for tests only), and only in a
process started with ``TRITON_INTERPRET=1`` (tests/conftest.py sets it where there is no GPU).
"""
from __future__ import annotations

import os

import torch

PRECISIONS = ("ieee", "tf32")


def available() -> str | None:
    """None if Triton imports, else the reason it does not."""
    try:
        import triton  # noqa: F401
    except ImportError as e:  # the CPU build of torch does not bring Triton
        return f"Triton is not installed ({e}); pip install triton"
    return None


def _kernels():
    """The kernels module. Triton's interpreter is a process-wide choice made when Triton is
    first imported (``TRITON_INTERPRET=1``; Triton's own library functions are decorated then)."""
    why = available()
    if why:
        raise RuntimeError(why)
    from dpctrl.policy.accel import _fused_kernels
    return _fused_kernels


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (numpy, on CPU tensors) in this process."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def _pow2(n: int, low: int = 16) -> int:
    return max(low, 1 << (int(n) - 1).bit_length())


class FusedDecoder:
    """``decode(sample, kv)`` and ``run_memory`` of a ``Transformer`` (the per-step interface
    ``DiffusionPolicy._denoise`` uses), with the decoder in Triton kernels."""

    def __init__(self, net, precision: str = "ieee", linear_block: int = 16, attend_block: int = 16):
        """``linear_block`` / ``attend_block``: output columns per program of the linear and
        attention kernels. The defaults are the fastest of {16, 32, 64}^2 for the 9M DP-T at
        batch 1 on an H200 (`python3 launch/bench/gpu_kernels.py --fused`, runs/gpu/s8/run2/kernels.txt:
        227 us per decode step at tf32, 284 us at 64/64): at 16 rows, narrow column blocks
        mean more programs streaming weights in parallel."""
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; known: {PRECISIONS}")
        if net.training:
            raise ValueError("the fused decoder is an inference path; call net.eval() first (dropout)")
        if getattr(net, "branch_hook", None) is not None:
            raise ValueError("a block cache hooks the eager network's branches; the fused decoder has none "
                             "(detach the cache, or run it without fused kernels)")
        cfg = net.cfg
        D = cfg.n_emb // cfg.n_head
        if D < 16 or D & (D - 1) or cfg.n_emb % 16 or cfg.n_emb > 512:
            raise ValueError(f"the fused kernels need a power-of-two head size >= 16 and n_emb a multiple "
                             f"of 16, at most 512 (a layer norm's row block is held whole); got n_emb "
                             f"{cfg.n_emb}, {cfg.n_head} heads (head size {D})")
        self.device = net.pos_emb.device
        if self.device.type != "cuda" and not interpreting():
            raise ValueError(f"the fused kernels are Triton GPU kernels; the network is on {self.device} "
                             "(TRITON_INTERPRET=1, set before Triton is first imported, runs them in "
                             "Triton's interpreter on the CPU: slow, for tests)")
        for name, blk in (("linear_block", linear_block), ("attend_block", attend_block)):
            if blk < 16 or blk & (blk - 1) or cfg.n_emb % blk:
                raise ValueError(f"{name} must be a power of two >= 16 dividing n_emb {cfg.n_emb}, got {blk}")
        self.linear_block, self.attend_block = linear_block, attend_block
        self.net, self.cfg, self.precision, self.D = net, cfg, precision, D
        self.k = _kernels()
        self.run_memory = net.run_memory  # once per run, eager
        with torch.no_grad():
            c = lambda t: t.detach().float().contiguous()  # noqa: E731
            self.layers = []
            for layer in net.layers:
                self.layers.append(dict(
                    ln_sa=(c(layer.ln_sa.weight), c(layer.ln_sa.bias)),
                    qkv=(c(torch.cat([layer.sa.q.weight, layer.sa.kv.weight])),
                         c(torch.cat([layer.sa.q.bias, layer.sa.kv.bias]))),
                    sa_proj=(c(layer.sa.proj.weight), c(layer.sa.proj.bias)),
                    ln_ca=(c(layer.ln_ca.weight), c(layer.ln_ca.bias)),
                    ca_q=(c(layer.ca.q.weight), c(layer.ca.q.bias)),
                    ca_proj=(c(layer.ca.proj.weight), c(layer.ca.proj.bias)),
                    ln_ffn=(c(layer.ln_ffn.weight), c(layer.ln_ffn.bias)),
                    fc1=(c(layer.ffn[0].weight), c(layer.ffn[0].bias)),
                    fc2=(c(layer.ffn[2].weight), c(layer.ffn[2].bias)),
                ))
            self.input_emb = (c(net.input_emb.weight), c(net.input_emb.bias))
            self.pos_emb = c(net.pos_emb[0])
            self.ln_f = (c(net.ln_f.weight), c(net.ln_f.bias))
            self.head = (c(net.head.weight), c(net.head.bias))
        self.eps = net.ln_f.eps

    # ------------------------------------------------------------ kernels
    def _linear(self, x, wb, ln=None, gelu=False, res=None, res_rows=None, step=None, xs=None):
        """act(LN(x) @ W^T + b) + res for x (R, K) contiguous; ``step``: a sampler step's scalars
        (``Sampler.affine``) applied with the sample ``xs`` (R, N) in the epilogue."""
        w, b = wb
        R, K = x.shape
        N = w.shape[0]
        out = torch.empty((R, N), dtype=torch.float32, device=x.device)
        # batch 1 is 16 rows: parallelism comes from the output columns
        BR, BN = min(_pow2(R), 64), self.linear_block if N >= self.linear_block else _pow2(N)
        BK = _pow2(K) if ln is not None else min(_pow2(K), 256)
        grid = (-(-N // BN), -(-R // BR))
        lnw, lnb = ln if ln is not None else (b, b)  # unused pointers when HAS_LN is off
        st = step or {}
        clip = st.get("clip")
        self.k.linear[grid](x, w, b, lnw, lnb, res if res is not None else b, out, R, N,
                            res_rows if res_rows is not None else R, self.eps,
                            xs if xs is not None else b, *(float(st.get(k, 0.0)) for k in "pquvab"),
                            float(clip or 0.0),
                            K=K, HAS_LN=ln is not None, GELU=gelu, HAS_RES=res is not None,
                            STEP=step is not None, CLIP=clip is not None,
                            BR=BR, BN=BN, BK=BK, PREC=self.precision, num_warps=4)
        return out

    def _attend(self, q, sq, k, sk, v, sv, proj, res, B, T, S, offset):
        """res + proj(attention): q, k, v pointers with (batch, [head,] token) strides."""
        C = self.cfg.n_emb
        out = torch.empty_like(res)
        BN = self.attend_block
        self.k.attend_project[(C // BN, B)](q, k, v, proj[0], proj[1], res, out, T, S, self.D ** -0.5,
                                            *sq, *sk, *sv, C=C, H=self.cfg.n_head, D=self.D, OFFSET=offset,
                                            BT=_pow2(T), BS=_pow2(S), BN=BN, PREC=self.precision, num_warps=4)
        return out

    def decode(self, sample: torch.Tensor, kv) -> torch.Tensor:
        """The decoder on the noisy sample (B, T, A) given every layer's memory (keys, values),
        each (B, heads, M, head size): as ``Transformer.decode``."""
        return self._decode(sample, kv, None)

    def decode_step(self, sample: torch.Tensor, kv, step: dict) -> torch.Tensor:
        """``decode`` then the sampler step ``step`` (``Sampler.affine``) in the output head's
        epilogue: the next sample, with no separate sampler kernels."""
        return self._decode(sample, kv, step)

    def _decode(self, sample: torch.Tensor, kv, step: dict | None) -> torch.Tensor:
        B, T, A = sample.shape
        C, D = self.cfg.n_emb, self.D
        if T > self.pos_emb.shape[0]:
            raise ValueError(f"horizon {T} > the network's {self.pos_emb.shape[0]}")
        xs = sample.reshape(B * T, A).float().contiguous()
        x = self._linear(xs, self.input_emb, res=self.pos_emb[:T], res_rows=T)
        for p, (k_mem, v_mem) in zip(self.layers, kv):
            qkv = self._linear(x, p["qkv"], ln=p["ln_sa"])  # (B*T, 3C): q | k | v, head h at h*D
            x = self._attend(qkv, (T * 3 * C, 3 * C), qkv[:, C:], (T * 3 * C, D, 3 * C),
                             qkv[:, 2 * C:], (T * 3 * C, D, 3 * C), p["sa_proj"], x, B, T, T, 0)
            q = self._linear(x, p["ca_q"], ln=p["ln_ca"])
            if k_mem.stride(-1) != 1 or v_mem.stride(-1) != 1:
                raise ValueError("memory keys/values need a contiguous head dimension")
            x = self._attend(q, (T * C, C), k_mem, k_mem.stride()[:3], v_mem, v_mem.stride()[:3],
                             p["ca_proj"], x, B, T, k_mem.shape[2], 1)
            h = self._linear(x, p["fc1"], ln=p["ln_ffn"], gelu=True)
            x = self._linear(h, p["fc2"], res=x)
        return self._linear(x, self.head, ln=self.ln_f, step=step, xs=xs).view(B, T, -1)

    def branch_names(self) -> list[str]:
        return self.net.branch_names()
