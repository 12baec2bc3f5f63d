"""The service's one error shape, `{"code": ..., "message": ...}`, and its OpenAPI declarations."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from detector.imageio import ImageDecodeError

log = logging.getLogger("resynth.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class ErrorBody(BaseModel):
    code: str
    message: str


def error_responses(*codes: int) -> dict:
    text = {400: "Bad request", 403: "Folder outside the allowed audit root, or audits disabled",
            404: "Not found", 408: "The request body did not arrive in time", 413: "Body or image too large",
            415: "Not an image / unsupported type", 422: "Empty, corrupt or truncated image, or an invalid request",
            503: "Overloaded (all scoring slots or the audit queue full) or model not loaded"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


DECODE_STATUS = {"too_large": (413, "image_too_large"), "unsupported": (415, "unsupported_media_type"),
                 "empty": (422, "empty_body"), "corrupt": (422, "corrupt_image"), "unreadable": (422, "corrupt_image")}


def install_error_handlers(app: FastAPI) -> None:
    def body(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api(_, exc: ApiError):
        return body(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(ImageDecodeError)
    async def _decode(_, exc: ImageDecodeError):
        status, code = DECODE_STATUS.get(exc.kind, (422, "corrupt_image"))
        return body(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_, exc: RequestValidationError):
        return body(422, "invalid_request", "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                     for e in exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. JSON that is not UTF-8)
            return body(422, "invalid_request", f"the request body could not be parsed: {exc.detail}")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return body(exc.status_code, code, str(exc.detail), exc.headers)  # 405 keeps its Allow header

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return body(500, "internal_error", "internal server error (logged on the server)")
