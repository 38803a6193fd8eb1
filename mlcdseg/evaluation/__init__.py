"""Scoring human-corrected masks against the model's, as the RefCOCO papers do.

`samples` reads an export task into human samples and model predictions; `scoring` compares one
pair into pixel counts; `metrics` accumulates them (`RefSegMeter`: cIoU, gIoU, Pr@k, N-acc,
T-acc); `review` counts what reviewers did with the pre-annotations; `score_ranking` measures
how well the predictions' scores find the masks that need fixing; `evaluate` runs a whole export
through them in parallel; `report` writes report.json, samples.csv and report.html, and
`review_queue` the optional CSV of scored tasks, lowest score first. Depends on mlcdseg.labelstudio and mlcdseg.masks, never the reverse.
"""
