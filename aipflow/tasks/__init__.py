from aipflow.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask"]
