"""Media decoding for audits: the frames of a video, sampled at a rate, and the faces of an image.

The face detector (OpenCV's bundled Haar cascade) is loaded once per thread, not per image (a cascade
object is not safe to share between threads).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..imageio import decode
from .walk import PROC_FD, Confinement, open_media

_local = threading.local()


def face_cascade() -> cv2.CascadeClassifier:
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        cascade = _local.cascade = cv2.CascadeClassifier(cv2.data.haarcascades
                                                         + "haarcascade_frontalface_default.xml")
    return cascade


def face_crops(data: bytes, source: str) -> list[bytes]:
    """PNG crops (with a 20% margin) of the frontal faces found in an encoded image."""
    img, _, _ = decode(data, source)
    rgb = np.asarray(img.convert("RGB"))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    faces = face_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    crops = []
    for x, y, w, h in faces:
        m = int(0.2 * max(w, h))
        crop = rgb[max(0, y - m):y + h + m, max(0, x - m):x + w + m]
        ok, buf = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if ok:
            crops.append(buf.tobytes())
    return crops


@contextlib.contextmanager
def video_capture(path: str | os.PathLike, guard: Confinement | None = None) -> Iterator[cv2.VideoCapture]:
    """An OpenCV capture of a video, released afterwards. With a guard, OpenCV reads the descriptor that was
    opened and checked, never the path again."""
    with contextlib.ExitStack() as stack:
        source = str(path)
        if guard is not None:
            f = stack.enter_context(open_media(path, guard))
            opened = PROC_FD / str(f.fileno())
            source = str(opened) if opened.exists() else str(guard.check(Path(path)))
        cap = cv2.VideoCapture(source)
        try:
            yield cap
        finally:
            cap.release()


def video_frames(path: str | os.PathLike, fps_target: float, max_frames: int,
                 guard: Confinement | None = None) -> tuple[list[bytes], list[float]]:
    """PNG frames sampled at about `fps_target` (at most `max_frames`) and their times in seconds."""
    with video_capture(path, guard) as cap:
        return _read_frames(cap, fps_target, max_frames)


def _read_frames(cap: cv2.VideoCapture, fps_target: float, max_frames: int) -> tuple[list[bytes], list[float]]:
    if not cap.isOpened():
        raise ValueError("cannot open video (corrupt or unsupported codec)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, round(fps / fps_target))
    frames, stamps, i = [], [], 0
    while len(frames) < max_frames:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            ok, buf = cv2.imencode(".png", frame)
            if ok:
                frames.append(buf.tobytes())
                stamps.append(i / fps)
        i += 1
    if not frames:
        raise ValueError("no decodable frames")
    return frames, stamps
