"""Pre-labeling Label Studio tasks: the one path from tasks to stored predictions.

`pipeline` reads tasks (image URL and expression), groups them by image and predicts each group
with one `predict_many` (shared by the backend's /predict, its background job and
`mlcdseg prelabel`); `store` reads a project's task pages and writes predictions in batches;
`executors` runs batches in this process or on Ray actors; `run` drives `mlcdseg prelabel`.
"""
