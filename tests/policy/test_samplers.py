"""Samplers against diffusers' schedulers on the same model outputs, plus start-level runs."""
import numpy as np
import pytest
import torch

from dpctrl.policy.samplers import DDIM, DDPM, DPMSolverPP, FlowEuler, make_sampler
from dpctrl.policy.schedule import NoiseSchedule

diffusers = pytest.importorskip("diffusers")


SCHED = {}


def fake_model(x, t, pred="epsilon", T=100, kind="squaredcos_cap_v2"):
    """A denoiser-like stand-in for a network, identical for both runs: it believes in a
    bounded x0_hat (a smooth function of x and t, slightly off) and returns the output of
    the given prediction type implied by it, so magnitudes stay those of real use."""
    t = int(t)
    sched = SCHED.setdefault((T, kind), NoiseSchedule(kind, T))
    a = sched.alphas_cumprod[t]
    sa, sb = a ** 0.5, (1 - a) ** 0.5
    x0_hat = 0.8 * torch.tanh(0.5 * x + 0.003 * t) + 0.05 * torch.sin(3 * x)
    eps = (x - sa * x0_hat) / sb
    return {"epsilon": eps, "sample": x0_hat, "v_prediction": sa * eps - sb * x0_hat}[pred]


def run_ours(sampler, n_steps, x, noises, **kw):
    state = sampler.new_state()
    for i, (t, t_next) in enumerate(sampler.steps(n_steps)):
        x = sampler.step(x, fake_model(x, t, sampler.prediction_type, **kw), t, t_next, state, noise=noises[i])
    return x


def run_theirs(sched, n_steps, x, **kw):
    sched.set_timesteps(n_steps)
    for t in sched.timesteps:
        x = sched.step(fake_model(x, int(t), sched.config.prediction_type, **kw), t, x, return_dict=False)[0]
    return x


@pytest.mark.parametrize("kind", ["squaredcos_cap_v2", "linear"])
@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("T, n", [(100, 100), (100, 10), (1000, 20)])
def test_ddim_matches_diffusers(kind, prediction, T, n):
    sched = NoiseSchedule(kind, T)
    ours = DDIM(sched, prediction_type=prediction, clip_sample=True)
    theirs = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule=kind, clip_sample=True,
                                     set_alpha_to_one=True, steps_offset=0, prediction_type=prediction)
    theirs.set_timesteps(n)
    assert ours.grid(n) == theirs.timesteps.tolist()
    x = torch.randn(4, 16, 7, generator=torch.Generator().manual_seed(0))
    a = run_ours(ours, n, x.clone(), [None] * n, T=T, kind=kind)
    b = run_theirs(theirs, n, x.clone(), T=T, kind=kind)
    assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("T, n", [(100, 100), (100, 10)])
def test_ddpm_matches_diffusers(prediction, T, n):
    """Same noise on both sides: diffusers' DDPM takes a generator, so draw the same stream."""
    sched = NoiseSchedule("squaredcos_cap_v2", T)
    ours = DDPM(sched, prediction_type=prediction, clip_sample=True)
    theirs = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                                     variance_type="fixed_small", prediction_type=prediction)
    theirs.set_timesteps(n)
    assert ours.grid(n) == theirs.timesteps.tolist()
    x = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(1))
    xa, xb = x.clone(), x.clone()
    g = torch.Generator().manual_seed(2)
    state = ours.new_state()
    for t, t_next in ours.steps(n):
        out = fake_model(xa, t, prediction, T)
        gen_state = g.get_state()
        xb = theirs.step(fake_model(xb, t, prediction, T), t, xb, generator=g, return_dict=False)[0]
        g2 = torch.Generator().set_state(gen_state)
        noise = torch.randn(xa.shape, generator=g2, dtype=xa.dtype)
        xa = ours.step(xa, out, t, t_next, state, noise=noise)
    assert (xa - xb).abs().max().item() <= 1e-5


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("T, n", [(100, 10), (100, 25), (1000, 8)])
def test_dpmpp_matches_diffusers(prediction, T, n):
    sched = NoiseSchedule("squaredcos_cap_v2", T)
    ours = DPMSolverPP(sched, prediction_type=prediction, clip_sample=False)
    theirs = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", algorithm_type="dpmsolver++", solver_order=2,
        prediction_type=prediction, thresholding=False, lower_order_final=True)
    theirs.set_timesteps(n)
    assert ours.grid(n) == theirs.timesteps.tolist()
    # float64: at t = T-1 (abar ~ 1e-8 under the capped cosine) converting epsilon to x0
    # multiplies float32 rounding by 1/sqrt(abar) in both implementations alike
    x = torch.randn(3, 16, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = run_ours(ours, n, x.clone(), [None] * n, T=T)
    b = run_theirs(theirs, n, x.clone(), T=T)
    assert (a - b).abs().max().item() <= 1e-5


def test_start_level_runs_feed_matching_timesteps():
    sched = NoiseSchedule("squaredcos_cap_v2", 100)
    ddim = DDIM(sched)
    assert ddim.steps(10, start_t=25) == [(25, 20), (20, 10), (10, 0), (0, -1)]
    assert ddim.steps(10, start_t=2) == [(2, 0), (0, -1)]
    assert ddim.steps(100, start_t=2) == [(2, 1), (1, 0), (0, -1)]
    with pytest.raises(ValueError, match="start timestep"):
        ddim.steps(10, start_t=100)
    with pytest.raises(ValueError, match="n_steps"):
        ddim.steps(0)
    flow = FlowEuler(sched)
    assert flow.steps(4) == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]
    assert flow.steps(4, start_t=0.3) == [(0.3, 0.25), (0.25, 0.0)]
    with pytest.raises(ValueError, match="flow"):
        flow.steps(4, start_t=0.0)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp"])
def test_oracle_denoiser_recovers_x0_from_any_start(name):
    """With the exact epsilon of a known x0, every sampler lands on x0 from any level."""
    sched = NoiseSchedule("squaredcos_cap_v2", 100)
    s = make_sampler(name, sched, clip_sample=False)
    x0 = torch.rand(2, 16, 3) * 1.6 - 0.8
    for start in (99, 40, 3, 0):
        noise = torch.randn_like(x0)
        x = sched.add_noise(x0, noise, start)
        state = s.new_state()
        for t, t_next in s.steps(10, start_t=start):
            a = float(sched.abar(t))
            eps = (x - a ** 0.5 * x0) / (1 - a) ** 0.5
            x = s.step(x, eps, t, t_next, state, noise=torch.zeros_like(x))
        assert torch.allclose(x, x0, atol=1e-4), (name, start)


def test_flow_oracle_and_training_target():
    sched = NoiseSchedule("squaredcos_cap_v2", 100)
    flow = FlowEuler(sched)
    x0, noise = torch.randn(2, 16, 3), torch.randn(2, 16, 3)
    x = flow.noisy(x0, noise, torch.ones(2))
    for t, t_next in flow.steps(10):
        x = flow.step(x, flow.target(x0, noise, None), t, t_next, {})
    assert torch.allclose(x, x0, atol=1e-5)


def test_training_targets_consistent_with_x0_eps():
    # float64 and a fixed seed: recovering x0 from an epsilon target at t=99 divides by
    # sqrt(abar) ~ 0.02, which made the float32 check fail for some random draws
    sched = NoiseSchedule("squaredcos_cap_v2", 100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(5, 4, 2, generator=g, dtype=torch.float64) - 0.5
    noise = torch.randn(5, 4, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 50, 90, 99])
    for pred in ("epsilon", "sample", "v_prediction"):
        s = DDIM(sched, prediction_type=pred, clip_sample=False)
        xt = s.noisy(x0, noise, t)
        tgt = s.target(x0, noise, t)
        for i in range(5):
            rx0, reps = s.x0_eps(xt[i], tgt[i], int(t[i]))
            assert torch.allclose(rx0, x0[i], atol=1e-4) and torch.allclose(reps, noise[i], atol=1e-3), pred


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_affine_form_is_its_step(prediction, clip):
    """The scalars a fused kernel applies (``Sampler.affine``) give DDIM's step at every pair of
    a run, the clean last step included; samplers with noise or state have none."""
    from dpctrl.policy.samplers import make_sampler
    from dpctrl.policy.schedule import NoiseSchedule
    sched = NoiseSchedule("squaredcos_cap_v2", 100)
    ddim = make_sampler("ddim", sched, prediction_type=prediction, clip_sample=clip)
    g = torch.Generator().manual_seed(0)
    for t, t_next in ddim.steps(10):
        x, out = torch.randn(4, 16, 3, generator=g) * 2, torch.randn(4, 16, 3, generator=g) * 2
        c = ddim.affine(t, t_next)
        x0 = c["p"] * x + c["q"] * out
        if c["clip"] is not None:
            x0 = x0.clamp(-c["clip"], c["clip"])
        fused = c["a"] * x0 + c["b"] * (c["u"] * x + c["v"] * out)
        torch.testing.assert_close(fused, ddim.step(x, out, t, t_next, {}), atol=2e-5, rtol=1e-5)
    for name in ("ddpm", "dpmpp"):
        assert make_sampler(name, sched, prediction_type=prediction).affine(50, 40) is None
