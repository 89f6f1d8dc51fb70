from aipflow.tasks.base import Task, check_optimizer_options
from aipflow.tasks.classification import ClassificationTask
from aipflow.tasks.coteaching import CoTeachingTask

__all__ = ["ClassificationTask", "CoTeachingTask", "Task", "check_optimizer_options"]
