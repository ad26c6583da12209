"""Domain errors. The API renders them as the ArcGIS error envelope in one place
(``api.errors``); the worker turns them into an ``esriJobFailed`` message in one place."""

from __future__ import annotations


class GeotrainError(Exception):
    """Unable to complete operation."""

    code = 400

    def __init__(self, message: str | None = None, details: list[str] | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.details = details or []
        super().__init__(self.message if not self.details else f"{self.message} {' '.join(self.details)}")


class ParameterError(GeotrainError):
    """Unable to complete operation."""

    code = 400

    def __init__(self, param: str, problem: str) -> None:
        self.param = param
        super().__init__(details=[f"Invalid value for parameter '{param}': {problem}"])


class JobNotFound(GeotrainError):
    """Job not found."""

    code = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job '{job_id}' does not exist or is inaccessible.")


class TokenRequired(GeotrainError):
    """Token Required."""

    code = 499


class InvalidToken(GeotrainError):
    """Invalid Token."""

    code = 498


class NotFound(GeotrainError):
    """Resource not found."""

    code = 404


class TrainingError(GeotrainError):
    """The training job failed."""

    code = 500
