"""Configuration of the offline stand-in model: a colour rule for tests and demos, NOT MLCD-Seg."""

from transformers import PretrainedConfig

STAND_IN_DESCRIPTION = (
    "Offline stand-in for tests and demos, NOT MLCD-Seg: it segments the pixels of the first "
    "colour named in the prompt (Euclidean RGB distance <= 60 from the pure colour)."
)


class MlcdsegStandInConfig(PretrainedConfig):
    """Config of the offline stand-in (NOT MLCD-Seg); `is_stand_in` is always True."""

    model_type = "mlcdseg_stand_in"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.is_stand_in = True
        self.description = STAND_IN_DESCRIPTION
