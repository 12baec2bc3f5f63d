"""What an audit is asked to do (stored with the audit, so a resumed audit does the same)."""

from __future__ import annotations

from dataclasses import dataclass

from .walk import Confinement


@dataclass(frozen=True)
class AuditConfig:
    workers: int = 1
    batch: int = 16                  # images scored together
    frames_per_second: float = 1.0   # video sampling rate
    max_frames: int = 300            # per video
    crop_faces: bool = False
    max_file_bytes: int = 500 * 2**20
    confine_to: str | None = None    # audit root: every path listed, hashed or opened must resolve inside it

    @property
    def guard(self) -> Confinement | None:
        return Confinement(self.confine_to) if self.confine_to else None

    @property
    def mode(self) -> str:
        """What a stored result depends on besides the file and the model."""
        return ("faces" if self.crop_faces else "full") + f"|fps={self.frames_per_second:g}|max={self.max_frames}"


# Summary key of a flagged item's 2D latent plot (base64 PNG); reports show it as an image, not as text.
LATENT_PNG = "latent_2d_png"
