import os

from django.core.wsgi import get_wsgi_application

from orchestrator_site import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
telemetry.setup(service_name=telemetry.WEB_SERVICE)  # before the handler loads the middleware
application = get_wsgi_application()
