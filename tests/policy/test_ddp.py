"""Data-parallel training on CPU (gloo): 2 processes stay identical and match 1 process
training on the same global batch."""
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from helpers import ToyDataset, tiny_policy
from dpctrl.policy.train import Trainer, TrainConfig

CFG = dict(steps=6, batch_size=8, lr=1e-3, warmup_steps=1, save_every=1000, log_every=3, seed=3)


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
        pol = tiny_policy(seed=rank, p_drop_attn=0.0)
        trainer = Trainer(pol, ToyDataset(), TrainConfig(**CFG), f"{out}/run", progress=False)
        trainer.run()
        state = {k: v.contiguous() for k, v in pol.state_dict().items()}
        state.update({f"ema.{k}": v.contiguous() for k, v in trainer.ema.state_dict().items()})
        save_file(state, f"{out}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_two_processes_stay_identical_and_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, f"file://{tmp_path}/store", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # the ranks never diverge (weights and EMA)
    single = tiny_policy(seed=0, p_drop_attn=0.0)
    start = {k: v.clone() for k, v in single.state_dict().items()}
    Trainer(single, ToyDataset(), TrainConfig(**CFG), tmp_path / "single", progress=False).run()
    moved = max(float((single.state_dict()[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3  # the comparison below is not between untrained weights
    diff = max(float((single.state_dict()[k] - r0[k]).abs().max()) for k in single.state_dict())
    assert diff < 1e-5, diff
    # rank 0 alone wrote the run's files
    assert (tmp_path / "run" / "checkpoint").exists() and (tmp_path / "run" / "log.jsonl").exists()
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
    np.testing.assert_array_equal(r0["net.head.weight"].numpy(), r1["net.head.weight"].numpy())
