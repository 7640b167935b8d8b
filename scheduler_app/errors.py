"""The service's exceptions; the HTTP layer maps each to one status code in api/errors.py."""

from __future__ import annotations


class SchedulerAppError(Exception):
    """Something went wrong in scheduler_app."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(SchedulerAppError):
    """The configuration is invalid."""


class NotFound(SchedulerAppError):
    """No such resource."""


class Unauthorized(SchedulerAppError):
    """A bearer token is required."""


class Forbidden(SchedulerAppError):
    """This token does not grant access to this resource."""


class Conflict(SchedulerAppError):
    """The resource is in a state that does not allow this."""


class InvalidField(SchedulerAppError):
    """A field of the request is invalid."""

    def __init__(self, location: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.location = location


class TooManyRequests(SchedulerAppError):
    """Too many requests; try again later."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
