#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
    from django.core.management import execute_from_command_line

    from orchestrator_site import telemetry

    telemetry.setup(service_name=telemetry.WEB_SERVICE)  # runserver: before the handler loads the middleware

    execute_from_command_line(sys.argv)
