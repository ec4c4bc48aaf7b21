"""``dpctrl calibrate rti|cache``: the warm-start level K' (policy/accel/warmstart.py) or a BAC
schedule (policy/accel/cache.py) from dataset windows, saved next to the checkpoint's
weights (``rti.json``, ``cache_bac.json``) where ``--warm-start rti`` and ``--cache bac`` read them."""
from __future__ import annotations

import argparse

from dpctrl.launch.options import write_json


def dataset(policy, path):
    """The policy's training windows over the store at ``path``."""
    from dpctrl.data import ReplayBuffer
    from dpctrl.data.dataset import WindowDataset
    return WindowDataset(ReplayBuffer.open(path), obs_keys=list(policy.cfg.obs_dims), image_keys=policy.cfg.image_keys,
                         n_obs_steps=policy.n_obs_steps, horizon=policy.horizon, n_action_steps=policy.n_action_steps)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from dpctrl.policy import checkpoint
    from dpctrl.policy.accel.cache import CACHE_FILE, calibrate_cache
    from dpctrl.policy.accel.warmstart import RTI_FILE, calibrate_rti_grids
    from dpctrl.policy.diffusion_policy import DiffusionPolicy
    data = args.data
    if data is None:
        recipe = checkpoint.read_sidecar(args.checkpoint, "recipe.json")
        data = recipe["data"]["path"] if recipe else f"runs/data/{args.env}.zarr"
    policy = DiffusionPolicy.load(args.checkpoint)
    if args.what == "cache":
        sampler, steps = args.sampler or "ddpm", int(args.steps or 100)
        policy.set_sampler(sampler, steps)
        n = args.windows or 16
        res = calibrate_cache(policy, dataset(policy, data).spaced_windows(n), args.budget, args.objective,
                              args.bu_top_n)
        res.update(data=str(data), windows=n)
        res["saved"] = str(checkpoint.write_sidecar(args.checkpoint, CACHE_FILE, res))
        print(f"BAC schedule for {sampler}-{steps}, budget {args.budget}, objective {args.objective}: "
              f"{res['block_updates']} block updates of {len(res['schedules']) * steps} "
              f"({res['block_updates_before_bu']} before Bubbling Union on {res['bu_blocks']}); saved {res['saved']}")
        write_json(args.json, res)
        return 0
    grids = [int(n) for n in str(args.steps or policy.cfg.num_inference_steps).split(",")]
    policy.set_sampler(args.sampler or policy.cfg.sampler, grids[0])
    cands = tuple(int(k) for k in args.candidates.split(",")) if args.candidates else (0, 1, 2, 3, 5, 8, 12, 20)
    cur, nxt = dataset(policy, data).window_pairs(args.windows or 64, policy.n_action_steps)
    res = calibrate_rti_grids(policy, cur, nxt, grids, candidates=cands, target=args.target, tail=args.tail,
                              noise=args.noise, max_calls=args.max_calls)
    res["data"] = str(data)
    res["saved"] = str(checkpoint.write_sidecar(args.checkpoint, RTI_FILE, dict(res)))
    print("| K' | network calls | contraction | error vs full |\n|---|---|---|---|")
    for r in res["candidates"]:
        print(f"| {r['k']} | {r['network_calls']} | {r['contraction']:.3f} | {r['error_vs_full']:.4f} |")
    print(f"recommended K' = {res['recommended_k']} on {res['sampler']}-{res['steps']} ({res['network_calls']} calls; "
          f"per grid: {res['grids']}); saved {res['saved']}")
    write_json(args.json, res)
    return 0


def add_parser(sub) -> None:
    cal = sub.add_parser("calibrate", help="offline calibration: `rti` picks the warm-start level K', "
                                           "`cache` a BAC schedule")
    cal.add_argument("what", choices=["rti", "cache"])
    cal.add_argument("--budget", type=int, default=10, help="cache: update steps per block")
    cal.add_argument("--objective", choices=["adjacent", "cached", "action"], default="adjacent",
                     help="cache: ACS objective (paper: adjacent; published code: cached; action, an extension: "
                          "the first-order action error of each stale segment, from autograd)")
    cal.add_argument("--bu-top-n", type=int, default=3, help="cache: Bubbling Union blocks (0: off)")
    cal.add_argument("--sampler", help="sampler to calibrate on (cache default: ddpm; rti: the checkpoint's)")
    cal.add_argument("--steps", help="its steps (cache default: 100; rti: the checkpoint's, or a comma list of "
                                     "grids to compare within --max-calls, e.g. 4,10)")
    cal.add_argument("--checkpoint", required=True)
    cal.add_argument("--env", required=True)
    cal.add_argument("--data", help="zarr store of observations (default: the checkpoint's training data)")
    cal.add_argument("--windows", type=int, help="dataset windows to calibrate on (default: rti 64, cache 16)")
    cal.add_argument("--target", type=float, default=0.5, help="rti: contraction ratio to reach")
    cal.add_argument("--tail", choices=["fine", "coarse"], default="fine", help="rti: steps below K' (see eval)")
    cal.add_argument("--noise", action="store_true", help="rti: forward-diffuse the guess to K'")
    cal.add_argument("--max-calls", type=int, help="rti: recommend the lowest-error K' within this many network calls")
    cal.add_argument("--candidates", help="rti: comma-separated K' values (default 0,1,2,3,5,8,12,20)")
    cal.add_argument("--json")
    cal.set_defaults(func=cmd_calibrate)

