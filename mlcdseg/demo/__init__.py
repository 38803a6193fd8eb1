"""`mlcdseg demo`: Label Studio and the backend on this machine with sample tasks, end to end.

`scenes` draws the sample images and their expressions; `run` starts both services, sets up the
project and retrieves predictions. The backend runs as a separate process (`mlcdseg serve`).
"""
