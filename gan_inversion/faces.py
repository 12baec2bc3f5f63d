"""Face framing: find faces, level the eyes, crop a square around each — one procedure for preparing a face
model's training images and for scoring images against that model.

Detection uses OpenCV's bundled Haar cascades (frontal face, then eyes inside the face's upper half); no
weights are downloaded. The crop is centred on the face box, rotated so that the two eyes are level, and is
`1 + 2 * margin` times the box's side. This approximates the FFHQ alignment (which uses 68 dlib landmarks) well
enough for the crop's scale and rotation, not to the pixel; a bundle records the framing it was prepared with
(`face_framing`) and scoring repeats it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image

FACE_DETECTOR = "opencv-haar-frontalface-default"
EYE_DETECTOR = "opencv-haar-eye"
FACE_MARGIN = 0.25  # crop margin around the face box, per side, as a share of its size
_local = threading.local()  # cascade objects are not safe to share between threads


def face_framing(margin: float = FACE_MARGIN) -> dict:
    """The framing record of a face model (stored in its bundle's data['framing'])."""
    return {"kind": "face", "detector": FACE_DETECTOR, "align": f"eyes level ({EYE_DETECTOR})",
            "margin": float(margin), "policy": "largest face; crop of (1 + 2 margin) x the face box, eyes level"}


def _cascade(name: str) -> cv2.CascadeClassifier:
    cache = getattr(_local, "cascades", None)
    if cache is None:
        cache = _local.cascades = {}
    if name not in cache:
        cache[name] = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    return cache[name]


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h in the input image
    angle: float                    # degrees the crop is rotated by so the eyes are level (0: eyes not found)
    eyes_found: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "box": list(self.box), "angle": round(self.angle, 2)}


def find_faces(rgb: np.ndarray, *, min_size: int = 24) -> list[Face]:
    """Frontal faces of an RGB (or gray) uint8 image, largest first, each with its eye-levelling angle."""
    gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    boxes = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    out = []
    for x, y, w, h in sorted((tuple(int(v) for v in b) for b in boxes), key=lambda b: -b[2] * b[3]):
        upper = gray[y:y + h // 2 + h // 8, x:x + w]
        eyes = _cascade("haarcascade_eye.xml").detectMultiScale(upper, scaleFactor=1.1, minNeighbors=5,
                                                                 minSize=(max(4, w // 10), max(4, w // 10)))
        centres = sorted(((ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in eyes), key=lambda c: c[0])
        left = [c for c in centres if c[0] < w / 2]
        right = [c for c in centres if c[0] >= w / 2]
        if left and right:
            (lx, ly), (rx, ry) = left[0], right[-1]
            angle = math.degrees(math.atan2(ry - ly, rx - lx))
            out.append(Face(box=(x, y, w, h), angle=angle, eyes_found=True))
        else:
            out.append(Face(box=(x, y, w, h), angle=0.0, eyes_found=False))
    return out


def crop_face(rgb: np.ndarray, face: Face, *, size: int, margin: float = FACE_MARGIN, channels: int = 3) -> np.ndarray:
    """The square crop of `face`, eyes level, resized to size x size (area when shrinking, cubic when enlarging):
    uint8 [size, size, channels] (channels 1: Pillow's 'L' conversion, as every other input gets)."""
    x, y, w, h = face.box
    cx, cy = x + w / 2.0, y + h / 2.0
    side = max(w, h) * (1.0 + 2.0 * margin)
    scale = size / side
    M = cv2.getRotationMatrix2D((cx, cy), face.angle, scale)  # rotate about the face centre and scale ...
    M[0, 2] += size / 2.0 - cx                                  # ... then move its centre to the crop's
    M[1, 2] += size / 2.0 - cy
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    crop = cv2.warpAffine(rgb, M, (size, size), flags=interp, borderMode=cv2.BORDER_REFLECT101)
    if channels == 1:
        crop = np.asarray(Image.fromarray(crop).convert("L"))
    return np.ascontiguousarray(crop).reshape(size, size, channels)
