"""resynth HTTP service (FastAPI): POST an image, get a calibrated fake-probability with its evidence.

The detector is loaded once in the lifespan and injected with `Depends(get_detector)`; scoring runs in a
worker thread with a bounded number in flight (503 + Retry-After beyond it). Domain errors are mapped to
HTTP errors in one place (`errors.install_error_handlers`), always as `{"code": ..., "message": ...}`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from detector.scoring import Detector

from .audits import AuditManager
from .audits import router as audits_router
from .errors import ApiError, error_responses, install_error_handlers
from .settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers allowed on top of max_bytes
RAW_TYPES = ("image/", "application/octet-stream")


class DetectResponse(BaseModel):
    p_fake: float
    verdict: str
    threshold: float
    model_id: str
    timings_ms: dict[str, float]
    warnings: list[str]
    evidence: dict[str, str] | None = None  # base64 PNGs with ?explain=true


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("resynth_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("resynth_request_latency_seconds", "Request latency", ["route"],
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=self.registry)
        self.inflight = Gauge("resynth_inflight_requests", "Images being scored now", registry=self.registry)
        self.scored = Counter("resynth_images_scored_total", "Images scored", ["verdict"], registry=self.registry)


def default_loader(settings: Settings) -> Detector:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if settings.device == "auto" else settings.device
    return Detector.load(settings.detector, device=device, max_pixels=settings.max_pixels,
                         refine_steps=settings.refine_steps)


def get_detector(request: Request) -> Detector:
    det = getattr(request.app.state, "detector", None)
    if det is None:
        raise ApiError(503, "not_ready", "the model is not loaded (yet)")
    return det


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` (never read whole into memory)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, settings: Settings) -> tuple[bytes, str]:
    """The uploaded image: multipart field `file`, or the raw body with an image content type."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        data = await read_limited(request, settings.max_bytes + MULTIPART_OVERHEAD)

        async def stream() -> AsyncIterator[bytes]:
            yield data

        try:
            form = await MultiPartParser(Headers(scope=request.scope), stream(), max_part_size=settings.max_bytes,
                                         max_files=4, max_fields=16).parse()
        except MultiPartException as exc:
            raise ApiError(422, "invalid_multipart", f"malformed multipart body: {exc.message}") from exc
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "missing_file", "multipart body has no file field named 'file'")
        content = await upload.read()
        if len(content) > settings.max_bytes:
            raise ApiError(413, "payload_too_large", f"file exceeds the limit of {settings.max_bytes} bytes")
        return content, upload.filename or "upload"
    if not ctype or ctype.startswith(RAW_TYPES):
        return await read_limited(request, settings.max_bytes), "body"
    raise ApiError(415, "unsupported_media_type",
                   f"content type {ctype!r}: send multipart/form-data (field 'file') or an image/* body")


def create_app(settings: Settings | None = None, *, loader: Callable[[Settings], Detector] = default_loader) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        app.state.detector = await anyio.to_thread.run_sync(loader, settings)
        app.state.audits = AuditManager(settings.audit_db, app.state.detector)
        app.state.audits.resume_unfinished(settings.audit_root)
        yield
        await anyio.to_thread.run_sync(app.state.audits.shutdown)
        app.state.detector = app.state.audits = None

    app = FastAPI(title="resynth", version="0.1.0", lifespan=lifespan,
                  description="GAN-image detection by StyleGAN2 inversion: POST an image, get a fake-probability.")
    app.state.settings, app.state.inflight, app.state.detector, app.state.audits = settings, 0, None, None
    metrics = app.state.metrics = Metrics()
    install_error_handlers(app)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - t0)

    @app.post("/v1/detect", response_model=DetectResponse, responses=error_responses(413, 415, 422, 503),
              summary="Score one image (multipart field 'file', or a raw image body)",
              openapi_extra={"requestBody": {"content": {
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
                  "image/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def detect(request: Request, explain: bool = Query(False, description="include evidence PNGs (base64)"),
                     detector: Detector = Depends(get_detector)):
        if app.state.inflight >= settings.max_inflight:
            raise ApiError(503, "overloaded", f"{settings.max_inflight} images are being scored; retry shortly",
                           headers={"Retry-After": str(settings.retry_after_s)})
        app.state.inflight += 1
        metrics.inflight.inc()
        try:
            data, source = await image_bytes(request, settings)
            result = await anyio.to_thread.run_sync(
                lambda: detector.score(data, explain=explain, source=source, max_pixels=settings.max_pixels))
        finally:
            app.state.inflight -= 1
            metrics.inflight.dec()
        metrics.scored.labels(result.verdict).inc()
        out = result.to_dict(include_features=False)
        out.pop("source")
        if explain:
            out["evidence"] = {k: base64.b64encode(v).decode() for k, v in result.evidence.items()}
        return out

    @app.get("/v1/model", responses=error_responses(503),
             summary="What the loaded model is, with its evaluation metrics")
    async def model(detector: Detector = Depends(get_detector)):
        return detector.info

    @app.get("/healthz", summary="The process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", responses=error_responses(503), summary="The model is loaded")
    async def readyz(detector: Detector = Depends(get_detector)):
        return {"status": "ready", "model_id": detector.model_id}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(audits_router)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((STATIC / "index.html").read_text())

    return app


