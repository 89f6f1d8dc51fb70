"""The weak-label tasks under DDP (two CPU processes, gloo, ddp_fork): stratified shards, whole-split weak
validation risks and per-sample weights shared by the ranks."""

import lightning as L
import pytest
import torch
from aipflow_weaksup.data import PUDigitsDataModule
from aipflow_weaksup.multiclass import WeakDigitsDataModule, WeakMulticlassTask
from aipflow_weaksup.risks import PURisk
from aipflow_weaksup.risks.partial import PartialLabelLoss
from aipflow_weaksup.risks.pu import pu_risk
from aipflow_weaksup.task import WeakBinaryTask
from lightning.pytorch.strategies import DDPStrategy

from aipflow.models import MLP
from aipflow.testing import quiet_trainer


class Record(L.Callback):
    """Each rank writes what it saw: its training batches, its logged weak risk, the weights and the loss
    buffers."""

    def __init__(self, out_dir):
        self.out_dir, self.batches = out_dir, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append({k: batch[k].tolist() for k in ("index", "s") if k in batch})

    def on_train_end(self, trainer, pl_module):
        torch.save(
            {
                "batches": self.batches,
                "weak_risk": float(trainer.callback_metrics["val/weak_risk"]),
                "prior": getattr(getattr(pl_module, "risk", None), "prior", None),
                "model": {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()},
                "buffers": {k: v.detach().clone() for k, v in pl_module.named_buffers() if k.startswith("loss.")},
            },
            f"{self.out_dir}/rank{trainer.global_rank}.pt",
        )


def fit_on_two_ranks(task, dm, out_dir):
    trainer = quiet_trainer(
        max_epochs=1,
        devices=2,
        strategy=DDPStrategy(start_method="fork", process_group_backend="gloo"),
        callbacks=[Record(str(out_dir))],
    )
    trainer.fit(task, dm)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.slow
def test_pu_task_on_two_ranks_shards_stratified_batches_and_selects_on_the_whole_split(tmp_path):
    torch.manual_seed(0)
    task = WeakBinaryTask(MLP(in_features=64, num_classes=1, hidden=(16,)), PURisk())
    ranks = fit_on_two_ranks(task, PUDigitsDataModule(batch_size=64), tmp_path)
    dm = PUDigitsDataModule(batch_size=64)
    dm.setup()
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) > 1  # the same number of steps on each rank
    assert all(sum(b["s"]) >= 1 and 0 in b["s"] for r in ranks for b in r["batches"])  # both groups in each
    seen = [{i for b in r["batches"] for i in b["index"]} for r in ranks]
    n = len(dm.train_set)
    assert len(seen[0] | seen[1]) == n  # every row, and shared only by the sampler's padding to equal shards
    assert len(seen[0] & seen[1]) == 2 * ((n + 1) // 2) - n
    # the logged weak risk is the uPU risk of the whole validation split, the same on both ranks
    model = MLP(in_features=64, num_classes=1, hidden=(16,))
    model.load_state_dict(ranks[0]["model"])
    with torch.no_grad():
        whole = pu_risk(model(dm.val_set.x), dm.val_set.s, dm.val_prior, "sigmoid", "upu").risk.item()
    assert ranks[0]["weak_risk"] == pytest.approx(whole, abs=1e-5)
    assert ranks[1]["weak_risk"] == pytest.approx(whole, abs=1e-5)


@pytest.mark.slow
def test_an_estimated_prior_is_rank_zeros_on_every_rank(tmp_path, monkeypatch):
    import aipflow_weaksup.task as task_module
    from aipflow_weaksup.prior import PriorEstimate

    def disagreeing_estimator(x, s, method, **kwargs):  # ranks that would estimate differently
        return PriorEstimate(0.40 + 0.05 * torch.distributed.get_rank(), 0.2, method)

    monkeypatch.setattr(task_module, "estimate_prior", disagreeing_estimator)
    task = WeakBinaryTask(MLP(in_features=64, num_classes=1, hidden=(16,)), PURisk(prior="auto"))
    ranks = fit_on_two_ranks(task, PUDigitsDataModule(batch_size=64), tmp_path)
    assert [r["prior"] for r in ranks] == [pytest.approx(0.40), pytest.approx(0.40)]


@pytest.mark.slow
def test_proden_weights_are_the_same_on_both_ranks_and_cover_every_row(tmp_path):
    torch.manual_seed(0)
    task = WeakMulticlassTask(MLP(64, 10, hidden=[32]), PartialLabelLoss("proden"))
    ranks = fit_on_two_ranks(task, WeakDigitsDataModule(weak="partial", batch_size=64), tmp_path)
    weights = [r["buffers"]["loss.weights"] for r in ranks]
    assert torch.equal(weights[0], weights[1])
    # every training row was visited by one of the ranks: its weights (over its candidate set) sum to one
    assert torch.allclose(weights[0].sum(1), torch.ones(len(weights[0])), atol=1e-5)
