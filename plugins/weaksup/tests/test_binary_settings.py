"""PNU / UU / SU / SD / Pcomp / Pconf from labelled data: the generated weak samples follow their conventions,
and each setting's estimator on them, group codes and all, is unbiased for the supervised PN risk."""

import lightning as L
import numpy as np
import pytest
import torch
from aipflow_weaksup.binary import BinaryWeakDigitsDataModule, weak_binary_labels
from aipflow_weaksup.risks.binary import BinaryWeakRisk, binary_weak_risk
from aipflow_weaksup.risks.pu import pn_risk
from aipflow_weaksup.risks.uu import pconf_risk
from aipflow_weaksup.task import WeakBinaryTask

from aipflow.models import MLP
from aipflow.testing import quiet_trainer


def population(prior, n=120_000, seed=0):
    """1-D class-conditionals N(+1, 1) / N(-1, 1), a fixed linear scorer, and the PN risk to match."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < prior, 1, -1)
    x = rng.normal(y.astype(float), 1.0)
    scores = torch.tensor(0.8 * x - 0.3)
    return y, x, scores, pn_risk(scores, torch.tensor(y), prior, "logistic").risk.item()


@pytest.mark.parametrize(
    "setting,prior,options",
    [
        ("pnu", 0.5, {"eta": 0.5}),
        ("pnu", 0.5, {"eta": -0.5}),
        ("uu", 0.5, {}),
        ("su", 0.7, {}),
        ("sd", 0.7, {}),
        ("pcomp", 0.6, {}),
        ("pcomp", 0.6, {"correction": "relu"}),
    ],
)
def test_each_setting_is_unbiased_for_the_pn_risk_on_generated_weak_data(setting, prior, options):
    y, _, scores, pn = population(prior)
    rows, group, realised = weak_binary_labels(y, setting, np.random.default_rng(1), n_labeled=20_000)
    assert realised["prior"] == pytest.approx((y == 1).mean())
    out = binary_weak_risk(
        setting,
        scores[rows],
        torch.from_numpy(group),
        realised["prior"],
        "logistic",
        theta=realised.get("theta"),
        theta2=realised.get("theta2"),
        **options,
    )
    assert out.risk.item() == pytest.approx(pn, abs=0.015)


def test_generated_samples_follow_their_conventions():
    rng = np.random.default_rng(0)
    y = np.where(rng.random(20_000) < 0.7, 1, -1)
    # UU: two equal sets, the recorded priors are the realised ones
    rows, group, r = weak_binary_labels(y, "uu", rng, theta=0.9, theta2=0.3)
    assert (group == 0).sum() == (group == 1).sum() and len(np.unique(rows)) == len(rows)
    assert r["theta"] == pytest.approx((y[rows][group == 0] == 1).mean())
    assert r["theta2"] == pytest.approx((y[rows][group == 1] == 1).mean())
    assert r["theta"] == pytest.approx(0.9, abs=1e-3) and r["theta2"] == pytest.approx(0.3, abs=1e-3)
    # SU: pairs of one class, both-positive with probability pi^2 / (pi^2 + (1 - pi)^2); U is the marginal
    rows, group, r = weak_binary_labels(y, "su", rng)
    pairs = y[rows][group == 1].reshape(-1, 2)
    assert (pairs[:, 0] == pairs[:, 1]).all()
    assert (pairs[:, 0] == 1).mean() == pytest.approx(0.49 / 0.58, abs=0.02)
    assert (y[rows][group == 0] == 1).mean() == pytest.approx(0.7, abs=0.02)
    # SD: mixed pairs are the dissimilar ones, 2 pi (1 - pi) of all pairs
    rows, group, r = weak_binary_labels(y, "sd", rng)
    pairs, codes = y[rows].reshape(-1, 2), group.reshape(-1, 2)[:, 0]
    assert ((pairs[:, 0] != pairs[:, 1]) == (codes == 2)).all()
    assert (codes == 2).mean() == pytest.approx(0.42, abs=0.03)
    # Pcomp: never (negative, positive)
    rows, group, r = weak_binary_labels(y, "pcomp", rng)
    pairs = y[rows].reshape(-1, 2)
    assert not ((pairs[:, 0] == -1) & (pairs[:, 1] == 1)).any() and (group.reshape(-1, 2) == [1, 2]).all()
    # PNU: n_labeled labelled rows carry their class, the rest 0
    rows, group, r = weak_binary_labels(y, "pnu", rng, n_labeled=300)
    assert (group != 0).sum() == 300 and (group[group != 0] == y[rows][group != 0]).all()


def test_binary_weak_risk_module_and_bad_input():
    scores = torch.randn(12, dtype=torch.float64, requires_grad=True)
    conf = torch.rand(12, dtype=torch.float64) * 0.9 + 0.1
    risk = BinaryWeakRisk("pconf", prior=0.4, loss="logistic")
    value = risk(scores, torch.ones(12, dtype=torch.long), conf)
    assert value.item() == pytest.approx(pconf_risk(scores, conf, 0.4, "logistic").risk.item())
    assert torch.autograd.gradcheck(lambda z: risk(z, torch.ones(12, dtype=torch.long), conf), (scores,))
    with pytest.raises(ValueError, match="risk.setting must be one of"):
        BinaryWeakRisk("pp")
    with pytest.raises(ValueError, match="applies to"):
        BinaryWeakRisk("su", correction="relu")
    with pytest.raises(ValueError, match="needs theta and theta2"):
        BinaryWeakRisk("uu", prior=0.5)(scores, torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError, match="needs each positive's confidence"):
        BinaryWeakRisk("pconf", prior=0.5)(scores, torch.ones(12, dtype=torch.long))
    with pytest.raises(ValueError, match="needs the class prior"):
        BinaryWeakRisk("su")(scores, torch.ones(12, dtype=torch.long))
    with pytest.raises(ValueError, match="theta2 < theta"):
        weak_binary_labels(np.ones(10), "uu", np.random.default_rng(0), theta=0.2, theta2=0.5)
    with pytest.raises(ValueError, match="data.setting must be one of"):
        BinaryWeakDigitsDataModule(setting="pq")


@pytest.mark.parametrize("setting", ["uu", "pconf"])
def test_digits_task_learns_from_weak_labels_only(setting):
    L.seed_everything(0, verbose=False)
    dm = BinaryWeakDigitsDataModule(setting=setting)
    dm.setup()
    if setting == "pconf":
        assert (dm.train_set.y == 1).all() and dm.train_set.confidence.min() >= 0.05
    task = WeakBinaryTask(MLP(in_features=64, num_classes=1, hidden=(32,)), BinaryWeakRisk(setting))
    trainer = quiet_trainer(max_epochs=15)
    trainer.fit(task, dm)
    assert task.risk.prior == pytest.approx(dm.prior)
    assert "val/weak_risk" in trainer.callback_metrics
    error = trainer.test(task, dm, verbose=False)[0]["test/error"]
    assert error < (0.15 if setting == "uu" else 0.4)  # chance is 0.5
