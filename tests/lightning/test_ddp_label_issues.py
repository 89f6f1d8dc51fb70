"""Label-issue evidence under DDP (two CPU processes, gloo, ddp_fork): the cross-fit's folds and the area under the
margin's runs are shared out among the ranks and gathered once; every rank ends with what one process computes."""

import os

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from aipflow.lightning import cross_fit, out_of_fold_posteriors
from aipflow.lightning.area_under_margin import area_under_margin
from aipflow.models import MLP
from aipflow.tasks import ClassificationTask
from aipflow.testing import quiet_trainer

N, K = 48, 3
CALLS = {"all_reduce": 0}


def data():
    x = torch.randn(N, 6, generator=torch.Generator().manual_seed(0))
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def evidence(task, x, labels):
    rows = [{"x": x[i], "y": labels[i]} for i in range(N)]
    probs = out_of_fold_posteriors(task, x, labels, folds=3, epochs=2, batch_size=8, seed=1)
    array = np.full((N, K), 7.0, dtype=np.float32)  # the memory-mapped path, not zeroed: gathered in blocks
    out_of_fold_posteriors(task, x, labels, folds=3, epochs=2, batch_size=8, seed=1, out=array)
    aum = area_under_margin(task, rows, labels, epochs=2, batch_size=8, seed=1)
    return probs, array, aum


class SearchAtFitStart(Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_fit_start(self, trainer, pl_module):
        x, labels = data()
        before = CALLS["all_reduce"]
        probs, array, aum = evidence(pl_module, x, labels)
        torch.save(
            {
                "probs": probs,
                "array": torch.from_numpy(array),
                "relative": torch.from_numpy(aum.relative),
                "thresholds": torch.tensor(aum.thresholds),
                "all_reduces": CALLS["all_reduce"] - before,
            },
            os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"),
        )


@pytest.mark.slow
def test_folds_and_runs_are_shared_out_and_gathered_once_to_what_one_process_computes(tmp_path, monkeypatch):
    real = torch.distributed.all_reduce

    def counting(*args, **kwargs):
        CALLS["all_reduce"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.distributed, "all_reduce", counting)
    monkeypatch.setattr(cross_fit, "GATHER_ROWS", 20)  # 48 rows: three blocks
    x, labels = data()
    torch.manual_seed(0)
    task = ClassificationTask(MLP(6, K, hidden=(8,)), num_classes=K)
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo")
    trainer = quiet_trainer(strategy=strategy, devices=2, max_steps=1, callbacks=[SearchAtFitStart(str(tmp_path))])
    trainer.fit(task, DataLoader(TensorDataset(x, labels), batch_size=8))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    torch.manual_seed(0)
    single_task = ClassificationTask(MLP(6, K, hidden=(8,)), num_classes=K)
    probs, array, aum = evidence(single_task, x, labels)
    for got in ranks:
        assert got["all_reduces"] == 1 + 3 + 1  # the probabilities, the array's three blocks, the margins
        assert torch.allclose(got["probs"], probs, atol=1e-6, rtol=0)
        assert np.allclose(got["array"].numpy(), array, atol=1e-6) and np.allclose(array, probs.numpy(), atol=1e-6)
        assert np.allclose(got["relative"].numpy(), aum.relative, atol=1e-6)
        assert np.allclose(got["thresholds"].numpy(), aum.thresholds, atol=1e-6)
