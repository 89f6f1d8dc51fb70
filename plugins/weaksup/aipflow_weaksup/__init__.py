"""aipflow-weaksup: weakly supervised learning as an aipflow plugin (contract api 1.0).

Only aipflow's public API is imported here; component modules load when a recipe names them.
"""

from aipflow.plugins import Plugin

__version__ = "0.3.0"

plugin = Plugin(
    name="weaksup",
    api_version="1.4",  # 1.4: aipflow.tasks.Task, aipflow.data.RowDataset
    components={
        "PURisk": "aipflow_weaksup.risks.pu:PURisk",
        "PNRisk": "aipflow_weaksup.risks.pu:PNRisk",
        "BinaryWeakRisk": "aipflow_weaksup.risks.binary:BinaryWeakRisk",
        "ComplementaryLoss": "aipflow_weaksup.risks.complementary:ComplementaryLoss",
        "PartialLabelLoss": "aipflow_weaksup.risks.partial:PartialLabelLoss",
        "PUDigitsDataModule": "aipflow_weaksup.data:PUDigitsDataModule",
        "BinaryWeakDigitsDataModule": "aipflow_weaksup.binary:BinaryWeakDigitsDataModule",
        "WeakBinaryTask": "aipflow_weaksup.task:WeakBinaryTask",
        "WeakDigitsDataModule": "aipflow_weaksup.multiclass:WeakDigitsDataModule",
        "WeakMulticlassTask": "aipflow_weaksup.multiclass:WeakMulticlassTask",
    },
    recipes="aipflow_weaksup:recipes",
)
