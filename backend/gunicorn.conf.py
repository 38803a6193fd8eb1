"""Gunicorn configuration of the backend; every value comes from the environment via Settings."""

from backend.server import gunicorn_options
from backend.settings import Settings

_options = gunicorn_options(Settings.from_env())

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
