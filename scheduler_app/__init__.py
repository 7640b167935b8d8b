"""scheduler_app: durable reminders and recurring jobs for Python web backends."""
