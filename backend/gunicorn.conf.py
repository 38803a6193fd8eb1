"""Gunicorn configuration of the backend; every value comes from the environment via Settings."""

from backend.server import gunicorn_options
from backend.settings import Settings
from backend.task_claims import shared_claims_file

_settings = Settings.from_env()
_options = gunicorn_options(_settings)
shared_claims_file(_settings.workers)  # made in the master, before the fork: all workers share it

bind = _options["bind"]
workers = _options["workers"]
threads = _options["threads"]
worker_class = _options["worker_class"]
preload_app = _options["preload_app"]
timeout = _options["timeout"]
graceful_timeout = _options["graceful_timeout"]
loglevel = _options["loglevel"]
accesslog = _options["accesslog"]
errorlog = _options["errorlog"]
control_socket_disable = _options["control_socket_disable"]
