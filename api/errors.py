"""The service's one error shape, `{"code": ..., "message": ...}`, and its OpenAPI declarations."""

from __future__ import annotations

from pydantic import BaseModel


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class ErrorBody(BaseModel):
    code: str
    message: str


def error_responses(*codes: int) -> dict:
    text = {400: "Bad request", 403: "Folder outside the allowed audit root, or audits disabled",
            404: "Not found", 413: "Body or image too large", 415: "Not an image / unsupported type",
            422: "Empty, corrupt or truncated image, or an invalid request", 503: "Overloaded or model not loaded"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}
