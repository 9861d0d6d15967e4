"""The default job's models take the data the default data config gives them."""

import torch

from launch.recipe.models import small_cnn


def test_cnn_reads_the_default_flat_features_as_images():
    # `python -m launch model=cnn` keeps data.image=false: (batch, 64) features
    torch.manual_seed(0)
    model = small_cnn()
    flat = torch.randn(4, 64)
    out = model(flat)
    assert out.shape == (4, 10)
    assert torch.equal(out, model(flat.view(4, 1, 8, 8)))  # the same as data.image=true
    assert "0.weight" in model.state_dict()  # checkpoints keep their parameter names
