"""A no-op FastAPI endpoint: the load client's ceiling is measured against it."""
