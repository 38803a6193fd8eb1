"""Remote-code files of the offline stand-in model (NOT MLCD-Seg).

`mlcdseg.model.stand_in.write_stand_in_model` copies these modules into a model directory, where
transformers loads them with ``trust_remote_code=True``. They import only numpy, torch,
transformers and each other (relatively), because transformers copies them into its modules
cache where ``mlcdseg`` may not be importable. This package is importable too, so
``mlcdseg.model.stand_in`` reuses the colour rule from here instead of keeping a second copy.
"""
