"""``python -m launch``: compose a Hydra config, start ranks with torchrun's machinery, run a task.

The only part of the project that knows Hydra and torch.distributed's
launcher. See ``conf/config.yaml`` for every key.
"""
