"""``dpctrl export``: a checkpoint's chunk as ONNX graphs with their manifest (policy/accel/onnx_export.py),
for ``--checkpoint DIR`` in eval, run and serve (ONNX Runtime, policy/onnx_policy.py)."""
from __future__ import annotations

import argparse

from dpctrl.launch.options import add_warm_start_args, apply_warm_start, write_json


def export_checkpoint(args: argparse.Namespace, out, checkpoint: str | None = None) -> dict:
    """Load ``checkpoint`` (default ``args.checkpoint``), set its sampler, warm start and cache as the options say, export to ``out``."""
    import torch

    from dpctrl.policy import registry
    from dpctrl.policy.accel.onnx_export import export_onnx
    torch.set_num_threads(1)
    checkpoint = checkpoint or args.checkpoint
    policy = registry.load_policy(checkpoint)
    if getattr(args, "sampler", None) or getattr(args, "steps", None):
        policy.set_sampler(args.sampler or policy.cfg.sampler, args.steps or policy.cfg.num_inference_steps)
    apply_warm_start(policy, argparse.Namespace(**{**vars(args), "checkpoint": checkpoint}))
    return export_onnx(policy, out, precision=getattr(args, "precision", "fp32"))


def cmd_export(args: argparse.Namespace) -> int:
    manifest = export_checkpoint(args, args.out)
    for name, g in manifest["graphs"].items():
        print(f"{args.out}/{g['file']}: the {name} chunk, {g['network_calls']} network calls, {g['bytes'] / 1e6:.2f} MB")
    print(f"run it with --checkpoint {args.out} (ONNX Runtime; its sampler and warm start are fixed at export)")
    write_json(args.json, manifest)
    return 0


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="a checkpoint's chunk as ONNX graphs (run with --checkpoint DIR)")
    e.add_argument("--checkpoint", required=True, help="checkpoint directory or shipped name")
    e.add_argument("--format", choices=["onnx"], default="onnx")
    e.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="int8: dynamic quantization of the weights")
    e.add_argument("--out", required=True, help="a new folder for the graphs and deploy.json")
    e.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp", "flow"])
    e.add_argument("--steps", type=int, help="denoising steps (network calls) per chunk")
    add_warm_start_args(e)
    e.add_argument("--json", help="write the manifest here")
    e.set_defaults(func=cmd_export)
