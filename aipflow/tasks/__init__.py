from aipflow.tasks.classification import ClassificationTask
from aipflow.tasks.coteaching import CoTeachingTask

__all__ = ["ClassificationTask", "CoTeachingTask"]
