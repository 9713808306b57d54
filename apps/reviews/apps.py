from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "apps.reviews"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers  # noqa: F401
