"""Deployment settings, read from the environment once (here and nowhere else)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from detector.runtime import RUNTIMES
from gan_inversion.defaults import DEFAULT_DETECTOR
from gan_inversion.ort import DEFAULT_CACHE


@dataclass(frozen=True)
class Settings:
    detector: str = str(DEFAULT_DETECTOR)  # RESYNTH_DETECTOR
    device: str = "auto"                   # RESYNTH_DEVICE: auto | cpu | cuda
    max_bytes: int = 10 * 2**20            # RESYNTH_MAX_BYTES: largest accepted request body
    max_pixels: int = 40_000_000           # RESYNTH_MAX_PIXELS: largest accepted image (width x height)
    max_inflight: int = 32                 # RESYNTH_MAX_INFLIGHT: images in flight (queued or scored); more get 503
    batch_max: int = 16                    # RESYNTH_BATCH_MAX: most images scored together (micro-batching)
    batch_wait_ms: float = 5.0             # RESYNTH_BATCH_WAIT_MS: how long a batch waits for more images
    refine_steps: int | None = None        # RESYNTH_REFINE_STEPS: override the detector's K (changes features)
    torch_threads: int = 0                 # RESYNTH_TORCH_THREADS: 0 = one fewer than the CPUs (scoring_threads)
    host: str = "127.0.0.1"                # RESYNTH_HOST
    port: int = 8000                       # RESYNTH_PORT
    retry_after_s: int = 2                 # RESYNTH_RETRY_AFTER: Retry-After seconds sent with 503
    audit_root: str | None = None          # RESYNTH_AUDIT_ROOT: folders under it may be audited (unset: none)
    audit_db: str = "resynth-audits.sqlite"  # RESYNTH_AUDIT_DB: SQLite path or SQLAlchemy URL
    max_audits: int = 1                    # RESYNTH_MAX_AUDITS: audits running at once, each holding one in-flight slot
    audit_queue: int = 4                   # RESYNTH_AUDIT_QUEUE: audits waiting for a slot; more get 503
    body_timeout_s: float = 30.0           # RESYNTH_BODY_TIMEOUT: seconds to receive a whole request body (else 408)
    max_connections: int = 128             # RESYNTH_MAX_CONNECTIONS: open connections; one more first evicts the
                                           # oldest without a request head, else gets 503 (api/protocol.py)
    malloc_arenas: int = 2                 # RESYNTH_MALLOC_ARENAS: glibc malloc arenas, and freed memory
                                           # handed back when idle (0: glibc left as it is; api/memory.py)
    header_timeout_s: float = 10.0         # RESYNTH_HEADER_TIMEOUT: seconds to send a complete request head (else 408)
    uncertain_margin: float = 0.0          # RESYNTH_UNCERTAIN_MARGIN: logit band around the threshold -> 'uncertain'
    stability_checks: int = 0              # RESYNTH_STABILITY_CHECKS: mild re-degradations scored too (0-3)
    cascade: bool = False                  # RESYNTH_CASCADE: 1 uses the detector's cascade (clear cases decided
                                           # on the encoder's guess: faster, ranks worse)
    runtime: str = "auto"                  # RESYNTH_RUNTIME: torch | onnx | auto (ONNX Runtime for a detector
                                           # without refinement steps, on the CPU: Detector.load)
    onnx_cache: str = str(DEFAULT_CACHE)   # RESYNTH_ONNX_CACHE: folder for the exported ONNX graphs, reused
                                           # across starts ('none': a temporary folder, exported at each start)


def boolean(raw: str) -> bool:
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


ENV = {
    "detector": ("RESYNTH_DETECTOR", str), "device": ("RESYNTH_DEVICE", str), "max_bytes": ("RESYNTH_MAX_BYTES", int),
    "max_pixels": ("RESYNTH_MAX_PIXELS", int), "max_inflight": ("RESYNTH_MAX_INFLIGHT", int),
    "refine_steps": ("RESYNTH_REFINE_STEPS", int), "torch_threads": ("RESYNTH_TORCH_THREADS", int),
    "host": ("RESYNTH_HOST", str), "port": ("RESYNTH_PORT", int), "retry_after_s": ("RESYNTH_RETRY_AFTER", int),
    "audit_root": ("RESYNTH_AUDIT_ROOT", str), "audit_db": ("RESYNTH_AUDIT_DB", str),
    "max_audits": ("RESYNTH_MAX_AUDITS", int), "audit_queue": ("RESYNTH_AUDIT_QUEUE", int),
    "body_timeout_s": ("RESYNTH_BODY_TIMEOUT", float), "max_connections": ("RESYNTH_MAX_CONNECTIONS", int),
    "header_timeout_s": ("RESYNTH_HEADER_TIMEOUT", float), "malloc_arenas": ("RESYNTH_MALLOC_ARENAS", int),
    "uncertain_margin": ("RESYNTH_UNCERTAIN_MARGIN", float),
    "stability_checks": ("RESYNTH_STABILITY_CHECKS", int), "cascade": ("RESYNTH_CASCADE", boolean),
    "batch_max": ("RESYNTH_BATCH_MAX", int), "batch_wait_ms": ("RESYNTH_BATCH_WAIT_MS", float),
    "runtime": ("RESYNTH_RUNTIME", str), "onnx_cache": ("RESYNTH_ONNX_CACHE", str),
}


def scoring_threads(s: Settings, cpus: int | None = None) -> int:
    """torch's intra-op threads for scoring: RESYNTH_TORCH_THREADS when set, else one fewer than the CPUs (at
    least one), leaving a core to the event loop, decoding and answers. Measured on 2 CPUs
    (`python -m benchmarks.api_load --torch-threads 1,2`): one thread halved the p50 at concurrency 1 and raised
    the images/s at 16, for the fast and the embedded detector alike."""
    if s.torch_threads > 0:
        return s.torch_threads
    return max(1, (cpus if cpus is not None else os.cpu_count() or 1) - 1)


def settings_from_env(environ: dict | None = None, **overrides) -> Settings:
    """Settings from RESYNTH_* variables (then explicit overrides); a malformed value is an error naming it."""
    environ = os.environ if environ is None else environ
    values = {}
    for field_name, (var, cast) in ENV.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[field_name] = cast(raw)
        except ValueError as exc:
            raise ValueError(f"environment variable {var}={raw!r} is not a valid {cast.__name__}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    s = Settings(**values)
    check_settings(s)
    return s


def check_settings(s: Settings) -> None:
    """A clear error for limits that cannot work together."""
    if min(s.max_inflight, s.max_bytes, s.max_pixels, s.max_connections) < 1 or s.body_timeout_s <= 0:
        raise ValueError("RESYNTH_MAX_INFLIGHT, RESYNTH_MAX_BYTES, RESYNTH_MAX_PIXELS, RESYNTH_MAX_CONNECTIONS and "
                         "RESYNTH_BODY_TIMEOUT must be positive")
    if s.batch_max < 1 or s.batch_wait_ms < 0:
        raise ValueError(f"RESYNTH_BATCH_MAX={s.batch_max} must be >= 1 and RESYNTH_BATCH_WAIT_MS >= 0")
    if s.runtime not in RUNTIMES:
        raise ValueError(f"RESYNTH_RUNTIME={s.runtime!r} must be one of {', '.join(RUNTIMES)}")
    if not 0 <= s.stability_checks <= 3:
        raise ValueError(f"RESYNTH_STABILITY_CHECKS={s.stability_checks} must lie between 0 and 3")
    if not 0 <= s.max_audits <= s.max_inflight or s.audit_queue < 0:
        raise ValueError(f"RESYNTH_MAX_AUDITS={s.max_audits} must lie between 0 and RESYNTH_MAX_INFLIGHT="
                         f"{s.max_inflight} (audits and detections share those slots), RESYNTH_AUDIT_QUEUE >= 0")
