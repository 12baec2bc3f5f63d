"""Media decoding for audits: the frames of a video, sampled at a rate. (The faces of an image: imageio.prepare_faces,
the same path `resynth detect` and the API take for a face model.)"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import cv2

from .walk import PROC_FD, Confinement, open_media


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
