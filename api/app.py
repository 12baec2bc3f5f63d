"""resynth HTTP service (FastAPI): POST an image, get a calibrated fake-probability with its evidence.

The detector is loaded once in the lifespan and injected with `Depends(get_detector)`. Scoring slots are an
`anyio.CapacityLimiter` shared by detections and audits (`RESYNTH_MAX_INFLIGHT`): a detection takes a slot
only once its body has fully arrived (`guard.RequestGuard` receives every body first, within its byte and
time limits) and gets 503 + Retry-After when none is free; an audit waits for one in a bounded queue.
Domain errors are mapped to HTTP errors in one place (`errors.install_error_handlers`), always as
`{"code": ..., "message": ...}`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import MISSING, fields
from pathlib import Path
from typing import get_type_hints

import anyio
import torch
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field, create_model
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from detector.runtime import Detector, ScoreResult, VerdictPolicy
from gan_inversion.defaults import pick_device
from gan_inversion.ort import OrtConfig

from .audits import AuditManager
from .audits import router as audits_router
from .batcher import Batcher
from .errors import ApiError, error_responses, install_error_handlers
from .guard import Metrics, RequestGuard
from .settings import Settings, check_settings, scoring_threads

STATIC = Path(__file__).resolve().parent / "static"
DETECT_PATH = "/v1/detect"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers allowed on top of max_bytes
JSON_BODY_LIMIT = 64 * 1024     # every other route: JSON requests are small
RAW_TYPES = ("image/", "application/octet-stream")


# The response of /v1/detect: ScoreResult's fields (detector/runtime/result.py), less what stays on the server
# (the source name, the raw features) and with the evidence PNGs as base64 text.
_HINTS = get_type_hints(ScoreResult)
_OMITTED = {"source", "features", "evidence"}
DetectResponse = create_model(
    "DetectResponse",
    **{f.name: (_HINTS[f.name], Field(default_factory=f.default_factory) if f.default_factory is not MISSING
                else (... if f.default is MISSING else f.default))
       for f in fields(ScoreResult) if f.name not in _OMITTED},
    evidence=(dict[str, str] | None, Field(None, description="base64 PNGs with ?explain=true")),
)


def default_loader(settings: Settings) -> Detector:
    return Detector.load(settings.detector, device=pick_device(settings.device), max_pixels=settings.max_pixels,
                         refine_steps=settings.refine_steps, cascade=settings.cascade, runtime=settings.runtime,
                         onnx=OrtConfig(cache_dir=None if settings.onnx_cache == "none" else settings.onnx_cache),
                         policy=VerdictPolicy(margin=settings.uncertain_margin,
                                              stability_checks=settings.stability_checks))


def get_detector(request: Request) -> Detector:
    det = getattr(request.app.state, "detector", None)
    if det is None:
        raise ApiError(503, "not_ready", "the model is not loaded (yet)")
    return det


def get_capacity(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.capacity


def get_batcher(request: Request) -> Batcher:
    return request.app.state.batcher


async def image_bytes(request: Request, settings: Settings) -> tuple[bytes, str]:
    """The uploaded image: multipart field `file` (exactly one), or the raw body with an image content type.
    The body is already complete and within the route's limit (RequestGuard)."""
    ctype = request.headers.get("content-type", "").lower()
    body = await request.body()
    if ctype.startswith("multipart/form-data"):
        async def stream():
            yield body

        try:
            form = await MultiPartParser(Headers(scope=request.scope), stream(), max_part_size=settings.max_bytes,
                                         max_files=4, max_fields=16).parse()
        except MultiPartException as exc:
            raise ApiError(422, "invalid_multipart", f"malformed multipart body: {exc.message}") from exc
        uploads = form.getlist("file")
        if len(uploads) > 1:
            raise ApiError(422, "duplicate_file", f"multipart body has {len(uploads)} parts named 'file'; send one")
        if not uploads or isinstance(uploads[0], str):
            raise ApiError(422, "missing_file", "multipart body has no file field named 'file'")
        content = await uploads[0].read()
        if len(content) > settings.max_bytes:
            raise ApiError(413, "payload_too_large", f"file exceeds the limit of {settings.max_bytes} bytes")
        return content, uploads[0].filename or "upload"
    if not ctype or ctype.startswith(RAW_TYPES):
        if len(body) > settings.max_bytes:
            raise ApiError(413, "payload_too_large", f"request body exceeds the limit of {settings.max_bytes} bytes")
        return body, "body"
    raise ApiError(415, "unsupported_media_type",
                   f"content type {ctype!r}: send multipart/form-data (field 'file') or an image/* body")


def plain_paths(routes) -> set[str]:
    """The parameter-free paths among routes (included routers walked too)."""
    out = set()
    for r in routes:
        path = getattr(r, "path", None)
        if isinstance(path, str) and "{" not in path:
            out.add(path)
        included = getattr(r, "original_router", None)  # a router included without a prefix (FastAPI >= 0.16x)
        out |= plain_paths(getattr(r, "routes", None) or getattr(included, "routes", None) or [])
    return out


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def _lifespan(settings: Settings, loader: Callable[[Settings], Detector]):
    """Load the detector once, run the batcher's scoring loop and the audit manager for the app's lifetime."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(scoring_threads(settings))
        metrics = app.state.metrics
        app.state.detector = await anyio.to_thread.run_sync(loader, settings)
        app.state.capacity = anyio.CapacityLimiter(settings.max_inflight)
        app.state.batcher = Batcher(app.state.detector, max_batch=settings.batch_max,
                                    wait_s=settings.batch_wait_ms / 1000,
                                    on_batch=lambda n, _s: metrics.batch_size.observe(n),
                                    trim_when_idle=settings.malloc_arenas > 0)
        async with anyio.create_task_group() as tg:
            scoring = anyio.CancelScope()

            async def scoring_loop():
                with scoring:
                    await app.state.batcher.run()

            tg.start_soon(scoring_loop)
            audits = await anyio.to_thread.run_sync(lambda: AuditManager(
                settings, app.state.detector, app.state.capacity, tg, metrics))
            app.state.audits = audits
            await audits.resume_unfinished()
            yield
            await audits.shutdown()
            scoring.cancel()
        app.state.detector = app.state.audits = app.state.batcher = None

    return lifespan


router = APIRouter()


@router.post(DETECT_PATH, response_model=DetectResponse, responses=error_responses(408, 413, 415, 422, 503),
             summary="Score one image (multipart field 'file', or a raw image body)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "file": {"type": "string", "format": "binary", "minLength": 1}}, "required": ["file"]},
                     "encoding": {"file": {"contentType": "image/*"}}},
                 "image/*": {"schema": {"type": "string", "format": "binary", "minLength": 1}}}}})
async def detect(request: Request, explain: bool = Query(False, description="include evidence PNGs (base64)"),
                 detector: Detector = Depends(get_detector), capacity: anyio.CapacityLimiter = Depends(get_capacity),
                 batcher: Batcher = Depends(get_batcher), settings: Settings = Depends(get_settings),
                 metrics: Metrics = Depends(get_metrics)):
    data, source = await image_bytes(request, settings)
    token = object()  # this image's scoring slot, held from decoding until it is scored
    try:
        capacity.acquire_on_behalf_of_nowait(token)
    except anyio.WouldBlock:
        raise ApiError(503, "overloaded", f"all {settings.max_inflight} scoring slots are busy; retry shortly",
                       headers={"Retry-After": str(settings.retry_after_s)}) from None
    metrics.inflight.inc()

    def release():
        capacity.release_on_behalf_of(token)
        metrics.inflight.dec()

    handed_over = False
    try:
        t0 = time.perf_counter()
        prep = await anyio.to_thread.run_sync(
            lambda: detector.prepare(data, source=source, max_pixels=settings.max_pixels))
        handed_over = True  # from here the batcher releases the slot, whatever happens to this request
        result = await batcher.score(prep, explain=explain, decode_ms=1000 * (time.perf_counter() - t0),
                                     release=release)
    finally:
        if not handed_over:
            release()
    metrics.scored.labels(result.verdict).inc()
    out = result.to_dict(include_features=False)
    out.pop("source")
    if explain:
        out["evidence"] = {k: base64.b64encode(v).decode() for k, v in result.evidence.items()}
    return out


@router.get("/v1/model", responses=error_responses(503),
            summary="What the loaded model is, with its evaluation metrics")
async def model(detector: Detector = Depends(get_detector)):
    return detector.info


@router.get("/healthz", summary="The process is alive")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503), summary="The model is loaded")
async def readyz(detector: Detector = Depends(get_detector)):
    return {"status": "ready", "model_id": detector.model_id}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(metrics: Metrics = Depends(get_metrics)):
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page():
    return HTMLResponse((STATIC / "index.html").read_text())


def create_app(settings: Settings | None = None, *, loader: Callable[[Settings], Detector] = default_loader) -> FastAPI:
    settings = settings or Settings()
    check_settings(settings)
    app = FastAPI(title="resynth", version="0.1.0", lifespan=_lifespan(settings, loader),
                  description="GAN-image detection by StyleGAN2 inversion: POST an image, get a fake-probability.")
    app.state.settings, app.state.detector, app.state.audits = settings, None, None
    metrics = app.state.metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(RequestGuard, timeout_s=settings.body_timeout_s, metrics=metrics,
                       routes=lambda: plain_paths(app.routes),
                       body_limit=lambda path: settings.max_bytes + MULTIPART_OVERHEAD if path == DETECT_PATH
                       else JSON_BODY_LIMIT)
    app.include_router(router)
    app.include_router(audits_router)
    return app
