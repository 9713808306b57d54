from celery import shared_task

from .services import reviews_escalate_overdue


@shared_task(name="reviews.escalate", ignore_result=True)
def escalate() -> int:
    """Escalate the reviews past their due time (beat, every DAGWRIGHT_REVIEW_ESCALATION_SECONDS)."""
    return reviews_escalate_overdue()
