"""Run in a subprocess with 4 simulated CPU devices: recovery on a 4x1 mesh (batch split over
``data``) ends with the params of a single-device run. Prints the largest difference as JSON."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import TINY_LLAMA  # noqa: E402

from jaxprune import sharding  # noqa: E402
from jaxprune.core.paths import flat_leaves  # noqa: E402
from jaxprune.models import LanguageModel  # noqa: E402
from jaxprune.training import LoraConfig, RecoverConfig, recover  # noqa: E402

model = LanguageModel(TINY_LLAMA)
params = model.init_params(0)
windows = ((np.arange(16)[:, None] * 5 + np.arange(16)) % 64).astype(np.int32)
masks = {"layers": {0: {"mlp": {"up_proj": {"kernel": jnp.asarray(np.eye(32, 64) == 0)}}}}}
out = {"devices": len(jax.devices())}
for method in ("lora", "masked"):
    config = RecoverConfig(method=method, steps=3, batch_size=4, lora=LoraConfig(rank=4))
    one = recover(model, params, windows, config, masks=masks, progress=False)
    mesh = sharding.make_mesh((4, 1))
    many = recover(model, params, windows, config, masks=masks, mesh=mesh, progress=False)
    diffs = [
        float(np.abs(np.asarray(leaf) - np.asarray(flat_leaves(many.params)[path])).max())
        for path, leaf in flat_leaves(one.params).items()
    ]
    out[method] = {"max_diff": max(diffs), "losses": [one.report["loss"], many.report["loss"]]}
print(json.dumps(out))
