"""A learning-rate schedule times a constant: how a NaN rollback lowers the lr of any schedule."""

import keras


@keras.saving.register_keras_serializable(package="nnrun")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, schedule, factor: float):
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        base = self.schedule(step) if callable(self.schedule) else self.schedule
        return base * self.factor

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        schedule = config["schedule"]
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        return cls(schedule, config["factor"])
