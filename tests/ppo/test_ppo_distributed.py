"""torch.distributed readiness: two real gloo ranks shard prompts, agree on metrics, one writes."""

import json
import os
import subprocess
import sys

from tests.ppo.ppo_helpers import REPO, tiny_lm


def test_two_ranks_shard_prompts_average_metrics_and_only_rank_0_writes(tmp_path_factory, tmp_path):
    lm = tiny_lm(tmp_path_factory)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    init = tmp_path / "init"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.ppo.ppo_dist_worker", str(r), "2", str(init), str(lm),
                               str(tmp_path)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert (r0["rank"], r0["world"], r1["rank"]) == (0, 2, 1)
    assert not set(r0["prompts"]) & set(r1["prompts"])  # each rank its own slice of the batch
    assert r0["metrics"] == r1["metrics"]  # all-reduced: every rank reports the same numbers
    assert r0["checkpoint_written"] and not r1["checkpoint_written"]
