"""mlcdseg: MLCD-Seg referring-expression segmentation for Label Studio."""

__version__ = "0.1.0"
