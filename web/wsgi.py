"""gunicorn's entry point: `gunicorn -c web/gunicorn.conf.py web.wsgi:app`.

The gevent worker monkey-patches before it imports this module (preload_app stays off).
"""

from common.logs import configure_logging
from common.settings import load_settings
from web.app import create_app

settings = load_settings()
configure_logging(settings, "web")
app = create_app(settings)
