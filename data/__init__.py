"""Episodes on disk: the zarr replay buffer and training windows over it."""
from dpctrl.data.replay_buffer import ReplayBuffer

__all__ = ["ReplayBuffer"]
