"""The server refuses a vector made for another model unless force_other_model (issue 18
item 9)."""

import pytest
import torch

from steerlab.errors import ConfigError
from steerlab.serve.config import ServeConfig
from steerlab.serve.store import VectorStore
from steerlab.vectors.vector import SteeringVector


def test_store_refuses_other_model_vectors_unless_forced(tiny_model):
    vec = SteeringVector.from_tensor(torch.ones(tiny_model.d_model), 1, model_id="org/other")
    with pytest.raises(ConfigError, match=r"made for 'org/other'.*force"):
        VectorStore(tiny_model, {"v": vec}, ServeConfig())
    store = VectorStore(tiny_model, {"v": vec}, ServeConfig(force_other_model=True))
    assert store is not None
