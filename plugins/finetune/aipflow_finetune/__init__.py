"""aipflow-finetune: fine-tuning pretrained encoders with robust losses as an aipflow plugin (contract api 1.0).

Only aipflow's public API is imported here; component modules (and transformers, peft) load when a recipe names
them.
"""

from aipflow.plugins import Plugin

__version__ = "0.1.0"

plugin = Plugin(
    name="finetune",
    api_version="1.4",  # 1.4: aipflow.models.create_timm_model
    components={
        "TextClassifier": "aipflow_finetune.text:TextClassifier",
        "VisionClassifier": "aipflow_finetune.vision:VisionClassifier",
        "Tokenize": "aipflow_finetune.data:Tokenize",
        "AdapterCheckpoint": "aipflow_finetune.callbacks:AdapterCheckpoint",
        "TrainableParameterGuard": "aipflow_finetune.callbacks:TrainableParameterGuard",
        "GradualUnfreeze": "aipflow_finetune.callbacks:GradualUnfreeze",
    },
    recipes="aipflow_finetune:recipes",
)
