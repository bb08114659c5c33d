"""Prompt, visual and scoring functions of the flashvid_clips_mc test task."""

import os
import re

LETTERS = "ABCD"


def doc_to_visual(doc):
    return [os.path.abspath(doc["video"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, doc["options"]))
    pre, post = kwargs.get("pre_prompt", ""), kwargs.get("post_prompt", "")
    return f"{pre}{doc['question']}\n{options}{post}"


def parse_choice(response):
    """The first standalone option letter in a response ("B", "(B)", "B." ...), or None."""
    match = re.search(r"\b([A-D])\b", response or "")
    return match.group(1) if match else None


def process_results(doc, results):
    return {"mc_accuracy": 100.0 if parse_choice(results[0]) == doc["answer"] else 0.0}
