"""engine.common's argument checks, in PyTorch-Ignite's words."""

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from distengine.engine import Engine, common


def test_common_training_handlers_say_what_is_wrong_as_ignite_does():
    trainer = Engine(lambda e, b: None)
    with pytest.raises(ValueError, match="If to_save argument is provided then output_path or"):
        common.setup_common_training_handlers(trainer, to_save={})
    with pytest.raises(ValueError, match="output_path and save_handler are mutually exclusive"):
        common.setup_common_training_handlers(
            trainer, to_save={}, output_path="x", save_handler=lambda c, f, m: None
        )
    alone = DistributedSampler(range(4), num_replicas=1, rank=0)
    with pytest.warns(UserWarning, match="train_sampler is a distributed sampler, but this"):
        common.setup_common_training_handlers(Engine(lambda e, b: None), train_sampler=alone)
    none_out = Engine(lambda e, b: None)
    common.setup_common_training_handlers(none_out, output_names=["loss"], with_pbars=False)
    with pytest.raises(TypeError, match="Unhandled type of update_function's output.*NoneType"):
        none_out.run([torch.zeros(1)])
