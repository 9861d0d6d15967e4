"""``python -m launch``: compose a Hydra config, start ranks with torchrun's machinery, run a task.

The only part of the project that knows Hydra and torch.distributed's
launcher. See ``conf/config.yaml`` for every key.

- :mod:`launch.config`: the schema and every check that runs before a rank starts
  (bad input exits 2 in one line, nothing written).
- :mod:`launch.job`: the run folder a job owns (lock, run identity, stop record),
  torch's elastic agent (rendezvous, restarts, Ctrl-C and SIGTERM), and what the
  launcher says when the job ends (:mod:`launch.exit_codes`).
- :mod:`launch.rank`: the one entry every rank runs, for the recipe, a script and
  an entrypoint, whether our agent, torchrun or srun started it.
- :mod:`launch.recipe`: the default job.
"""
