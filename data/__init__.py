"""Episodes on disk: the zarr replay buffer and training windows over it."""
from data.replay_buffer import ReplayBuffer

__all__ = ["ReplayBuffer"]
