"""The WSGI entry point for gunicorn: `gunicorn -c backend/gunicorn.conf.py backend._wsgi:app`.

Imported by each worker after the fork (preload_app is off), so each loads the model once.
"""

from backend.server import load_app
from backend.settings import Settings

app = load_app(Settings.from_env())
