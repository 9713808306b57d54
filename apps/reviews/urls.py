from django.urls import path

from . import views

app_name = "reviews"

urlpatterns = [
    path("reviews/", views.inbox, name="inbox"),
    path("reviews/counts/", views.counts, name="counts"),
    path("reviews/history/", views.history, name="history"),
    path("reviews/decide/", views.decide_selected, name="decide-selected"),
    path("reviews/<int:review_id>/", views.review_detail, name="detail"),
    path("reviews/<int:review_id>/decide/", views.review_decide_view, name="decide"),
]
