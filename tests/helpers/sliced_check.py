"""One process of a multi-process sliced load: ``sliced_check.py DIR COORDINATOR N ID``.

Loads ``DIR`` by slices onto a 1x4 mesh over 2 processes, checks every shard this process holds
against the whole tensor (read the ordinary way), and prints one JSON line: whether all agree, and
the kernel bytes this process holds against the kernels' total.
"""

import json
import sys

from jaxprune import distributed

directory, coordinator, processes, index = sys.argv[1:5]
distributed.initialize(coordinator, int(processes), int(index), timeout_seconds=120)

import numpy as np  # noqa: E402

from jaxprune import sharding  # noqa: E402
from jaxprune.core.paths import get_leaf, leaf_paths  # noqa: E402
from jaxprune.models.loaders.hf import load_hf_checkpoint  # noqa: E402
from jaxprune.models.loaders.sliced import load_sliced  # noqa: E402

sliced = load_sliced(directory, sharding.make_mesh((1, 4)))
whole = load_hf_checkpoint(directory)
equal, held, total = True, 0, 0
for path in leaf_paths(whole.params):
    array, want = get_leaf(sliced.params, path), np.asarray(get_leaf(whole.params, path))
    shards = {}
    for shard in array.addressable_shards:
        shards[str(shard.index)] = np.asarray(shard.data)
        equal &= bool((np.asarray(shard.data) == want[shard.index]).all())
    if path.endswith("kernel") and path.startswith("layers"):
        held += sum(s.nbytes for s in shards.values())
        total += want.nbytes
print(json.dumps({"equal": equal, "kernel_bytes_held": held, "kernel_bytes_total": total}))
