"""Label-issue search on weak labels: refused in one line (the rows' ``y`` is the clean label kept for reports, not
a label training uses; finding issues in it would look at the answer)."""

import pytest
from aipflow_weaksup.multiclass import WeakDigitsDataModule

from aipflow.lightning import IssueSearch, search_label_issues
from aipflow.models import MLP
from aipflow.tasks import ClassificationTask


def test_complementary_digits_are_refused_before_any_training():
    task = ClassificationTask(MLP(64, 10, hidden=(8,)), num_classes=10)
    with pytest.raises(ValueError, match="data: WeakDigitsDataModule does not say which labels its training rows"):
        search_label_issues(task, WeakDigitsDataModule(weak="complementary"), None, IssueSearch())
