"""Configuration of the offline stand-in model: a colour rule for tests and demos, NOT MLCD-Seg."""

from transformers import PretrainedConfig

STAND_IN_DESCRIPTION = (
    "Offline stand-in for tests and demos, NOT MLCD-Seg: it segments the pixels of the first "
    "colour named in the prompt (Euclidean RGB distance <= 60 from the pure colour)."
)


class MlcdsegStandInConfig(PretrainedConfig):
    """Config of the offline stand-in (NOT MLCD-Seg); `is_stand_in` is always True.

    `latency_ms` is the set cost of one `seg` call (it sleeps that long), so that tests and
    benchmarks can give the stand-in the cost of a real model.
    """

    model_type = "mlcdseg_stand_in"

    def __init__(self, latency_ms: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.latency_ms = float(latency_ms)
        self.is_stand_in = True
        self.description = STAND_IN_DESCRIPTION
