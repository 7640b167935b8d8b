"""The operators' dashboard: server-rendered pages under /dashboard, served by the service."""
