"""The tutorial set-up that scheduler_app is measured against."""
