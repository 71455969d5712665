"""Video notes made at test time with OpenCV's ``VideoWriter`` (MPEG-4 Part 2, ``mp4v`` in ``.mp4``: the codec
the opencv-python wheel can write; Telegram's own notes are H.264 in MPEG-4, the same container).

``VideoWriter`` writes only to a path: the file is made in a temporary directory, read back and deleted. That is
the test's side (the "user's phone"); the bot never writes a note anywhere.
"""

from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np


def video_note(seconds: float = 2.0, *, side: int = 240, fps: int = 15, seed: int = 0) -> bytes:
    """A square MPEG-4 video of ``seconds`` with a moving "face" disc; different ``seed`` → different bytes."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "note.mp4")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (side, side))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot write mp4v here")
        try:
            for i in range(max(1, int(seconds * fps))):
                frame = np.empty((side, side, 3), np.uint8)
                frame[:] = (base + i * 3) % 255
                centre = (side // 2 + int(10 * np.sin(i / 5)), side // 2)
                cv2.circle(frame, centre, side // 4, (140, 160, 200), -1)
                cv2.putText(frame, str(seed), (10, side - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
                writer.write(frame)
        finally:
            writer.release()
        with open(path, "rb") as file:
            return file.read()
