"""DeepSpeed (optional extra ``aipflow[deepspeed]``) through Lightning's DeepSpeedStrategy on 2 CPU processes: ZeRO
1-3 drive plain optimizers with aipflow's integration present (it steps aside), equal to one process on the global
batch; SAM / ASAM / bSAM / IVON are refused with one line, since DeepSpeed steps the optimizer it wraps without a
closure (their second pass and their noise would silently not happen)."""

import functools
import os

import pytest
import torch

from tests.lightning.helpers import CountingModule, loader, regression_data, trainer
from tests.lightning.test_ddp import rank_rows

pytest.importorskip("deepspeed")

SGD = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)


class GatheredWeights(CountingModule):
    def __init__(self, factory, out_dir):
        super().__init__(factory)
        self.out_dir = out_dir

    def on_train_end(self):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.net.parameters())):  # ZeRO-3 partitions the parameters
            weights = [p.detach().clone() for p in self.net.parameters()]
        torch.save(weights, os.path.join(self.out_dir, f"w{self.trainer.global_rank}.pt"))


def deepspeed_fit(factory, stage, tmp_path, steps=2):
    from aipflow.testing import CPUDeepSpeedStrategy

    torch.manual_seed(0)
    model = GatheredWeights(factory, str(tmp_path))
    x, y = regression_data(64)
    strategy = CPUDeepSpeedStrategy(stage=stage, process_group_backend="gloo")
    trainer(strategy=strategy, devices=2, max_steps=steps, configure_integration=False).fit(model, loader(x, y, 8))
    return torch.load(tmp_path / "w0.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_with_a_plain_optimizer_equals_one_process_on_the_global_batch(stage, tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    got = deepspeed_fit(SGD, stage, tmp_path)
    torch.manual_seed(0)
    single = CountingModule(SGD)
    x, y = regression_data(64)
    batches = [torch.cat(rank_rows(step)).tolist() for step in range(2)]
    trainer(max_steps=2).fit(single, DataLoader(TensorDataset(x, y), batch_sampler=batches))
    assert max((a - b).abs().max().item() for a, b in zip(got, single.parameters())) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("name, stage", [("SAM", 2), ("SAM", 0), ("IVON", 3), ("BSAM", 1)])
def test_multi_pass_optimizers_are_refused_clearly(name, stage, tmp_path):
    from aipflow.optim import BSAM, IVON, SAM

    factory = {
        "SAM": functools.partial(SAM, base_optimizer=SGD),
        "IVON": functools.partial(IVON, ess=64.0),
        "BSAM": functools.partial(BSAM, train_size=64),
    }[name]
    with pytest.raises(Exception, match=f"{name} with CPUDeepSpeedStrategy is not supported: DeepSpeed steps"):
        deepspeed_fit(factory, stage, tmp_path)
