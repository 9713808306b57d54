from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from apps.api.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("apps.reviews.urls")),
    path("", include("apps.audit.urls")),
    path("", include("apps.console.urls")),
]
