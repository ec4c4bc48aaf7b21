"""Policy core: pure torch + numpy. Imports nothing from envs/, control/, data/ or launch/."""
