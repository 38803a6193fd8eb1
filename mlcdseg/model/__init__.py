"""The model: MLCD-Seg (or the offline stand-in) turning an image and an expression into a mask.

`settings.ModelSettings` reads the model options from the environment once;
`loading.load_model` gives a `segmenter.Segmenter` whose `predict` returns a `Prediction`;
`prompts` builds the model's prompt from an expression; `stand_in` writes the offline stand-in
model (a colour rule, NOT MLCD-Seg) that loads through the same code path. Exported here:
load_model, Segmenter, Prediction, DEFAULT_MODEL. torch and transformers load only with a model.
"""

from mlcdseg.model.loading import DEFAULT_MODEL, load_model
from mlcdseg.model.segmenter import Prediction, Segmenter

__all__ = ["DEFAULT_MODEL", "Prediction", "Segmenter", "load_model"]
