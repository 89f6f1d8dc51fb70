"""The core's own components, registered through the same contract as any plugin (see :mod:`aipflow.plugins.contract`).

Targets are ``"module:attribute"`` strings so that listing them imports nothing.
"""

from aipflow.plugins.contract import CORE_SOURCE, PLUGIN_API_VERSION, Plugin

__all__ = ["CORE"]

_CORE_COMPONENTS: dict[str, str] = {
    # LightningModules and DataModules
    "ClassificationTask": "aipflow.tasks.classification:ClassificationTask",
    "CoTeachingTask": "aipflow.tasks.coteaching:CoTeachingTask",
    "DigitsDataModule": "aipflow.data.digits:DigitsDataModule",
    "HFDataModule": "aipflow.data.hf:HFDataModule",
    # networks
    "MLP": "aipflow.models:MLP",
    "SmallCNN": "aipflow.models:SmallCNN",
    "TimmModel": "aipflow.models:TimmModel",
    # sharpness-aware and Bayesian optimizers, and what makes them right inside Trainer
    "SAM": "aipflow.optim.sam:SAM",
    "ASAM": "aipflow.optim.sam:ASAM",
    "BSAM": "aipflow.optim.bsam:BSAM",
    "bSAM": "aipflow.optim.bsam:BSAM",
    "IVON": "aipflow.optim.ivon:IVON",
    "SGLD": "aipflow.optim.sgld:SGLD",
    "PSGLD": "aipflow.optim.psgld:PSGLD",
    "pSGLD": "aipflow.optim.psgld:PSGLD",
    "PolynomialDecayLR": "aipflow.optim.schedules:PolynomialDecayLR",
    "SharpnessAwareTraining": "aipflow.lightning.multi_pass:SharpnessAwareTraining",
    "RNGStateCheckpoint": "aipflow.lightning.checkpoint:RNGStateCheckpoint",
    "LabelIssuePruning": "aipflow.lightning.label_issue_pruning:LabelIssuePruning",
    "LabelNoiseMonitor": "aipflow.lightning.label_noise_monitor:LabelNoiseMonitor",
    "SharpnessMonitor": "aipflow.lightning.sharpness_monitor:SharpnessMonitor",
    "TransitionMatrixEstimation": "aipflow.lightning.transition_matrix:TransitionMatrixEstimation",
    # losses
    "CrossEntropy": "torch.nn:CrossEntropyLoss",
    "CE": "torch.nn:CrossEntropyLoss",
    **{
        name: f"aipflow.losses.robust:{name}"
        for name in (
            "GCE",
            "TruncatedGCE",
            "SCE",
            "MAE",
            "NCE",
            "NFL",
            "NCERCE",
            "NFLRCE",
            "NCEMAE",
            "BootstrapSoft",
            "BootstrapHard",
            "LabelSmoothing",
        )
    },
    **{name: f"aipflow.losses.correction:{name}" for name in ("ForwardCorrection", "BackwardCorrection", "TRevision")},
    "ELR": "aipflow.losses.elr:ELR",
    # base optimizers and schedulers from torch, so every recipe can use short names
    "SGD": "torch.optim:SGD",
    "Adam": "torch.optim:Adam",
    "AdamW": "torch.optim:AdamW",
    "CosineAnnealingLR": "torch.optim.lr_scheduler:CosineAnnealingLR",
    "OneCycleLR": "torch.optim.lr_scheduler:OneCycleLR",
    "StepLR": "torch.optim.lr_scheduler:StepLR",
    "MultiStepLR": "torch.optim.lr_scheduler:MultiStepLR",
    # Lightning callbacks and loggers
    # Lightning's, except that save_last=True rewrites last.ckpt every epoch (Lightning 2.6 only on a top-k save)
    "ModelCheckpoint": "aipflow.lightning.checkpoint:ModelCheckpoint",
    "EarlyStopping": "lightning.pytorch.callbacks:EarlyStopping",
    "LearningRateMonitor": "lightning.pytorch.callbacks:LearningRateMonitor",
    "CSVLogger": "lightning.pytorch.loggers:CSVLogger",
    "TensorBoardLogger": "lightning.pytorch.loggers:TensorBoardLogger",
}

CORE = Plugin(name=CORE_SOURCE, api_version=PLUGIN_API_VERSION, components=_CORE_COMPONENTS, recipes="aipflow:recipes")
