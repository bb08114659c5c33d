"""``flashvid demo`` and ``flashvid viz`` run headless on CPU and write valid PNGs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

import flashvid
from flashvid.cli import main
from flashvid.demo.baselines import STRATEGY_NAMES, count_bounds
from flashvid.demo.clips import demo_clip
from flashvid.demo.features import importance, patch_features
from flashvid.io import save_tensors

SMALL = ["--frames", "6", "--size", "64", "--dim", "32"]  # 4x4 tokens per frame


def check_png(path, min_size=(300, 200)) -> None:
    """A real, decodable PNG of a drawn figure (not blank)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50


def test_demo_writes_a_summary_and_a_figure_per_clip(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *SMALL, "--clips", "pan-zoom,scene-cut"]) == 0
    text = capsys.readouterr().out
    for needle in ("== pan-zoom", "== scene-cut", "budget", "segments", "ADTS", "TSTM",
                   "DPC-kNN", "output", "fidelity", "worst frame", f"figure     {out}"):
        assert needle in text, needle
    assert sorted(p.name for p in out.iterdir()) == ["pan-zoom.png", "scene-cut.png"]
    for name in ("pan-zoom", "scene-cut"):
        check_png(out / f"{name}.png")
    # the summary reports the compression of exactly these tokens
    clip = demo_clip("pan-zoom", frames=6, size=64)
    x = patch_features(clip.frames, 16, 32, 0)
    want = flashvid.compress(x, importance(x), retention_ratio=0.1)
    assert f"output     {want.tokens.shape[0]} tokens" in text


def test_demo_other_strategy_and_frames(tmp_path, capsys):
    out = tmp_path / "u"
    assert main(["demo", "--out", str(out), *SMALL, "--clips", "moving-object", "--strategy",
                 "uniform", "--show", "0,2,4", "--retention", "0.25"]) == 0
    text = capsys.readouterr().out
    assert "uniform spatial pooling" in text and "output     30 tokens" in text  # 6 x ceil(5)
    check_png(out / "moving-object.png", min_size=(200, 200))


def test_demo_compare_table_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["demo", "--out", str(out), *SMALL, "--clips", "moving-object", "--compare",
                 "--retentions", "0.1,0.25"]) == 0
    text = capsys.readouterr().out
    assert "| strategy | r = 0.10 | r = 0.25 |" in text and "TSTM vs TTM" in text
    assert "| moving-object | 0.25 | " in text
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(STRATEGY_NAMES) * 2
    assert {r["strategy"] for r in rows} == set(STRATEGY_NAMES)
    for r in rows:
        base = flashvid.FlashVIDConfig(retention_ratio=float(r["retention"]))
        low, high = count_bounds(r["strategy"], 6, 16, base)
        assert low <= int(r["count"]) <= high
        assert int(r["budget"]) == low and int(r["inputs"]) == 96
        assert -1 <= float(r["worst"]) <= float(r["mean"]) <= 1
    md = (out / "compare.md").read_text()
    assert "Settings: clips moving-object; 6 frames; about 64x64 px" in md
    check_png(out / "compare.png")


def test_demo_errors(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert main(["demo", "--out", str(tmp_path), "--clips", "photos", "--size", "60"]) == 2
        assert torch.get_num_threads() == 3  # --threads 1 while it ran, restored afterwards
    finally:
        torch.set_num_threads(threads)
    assert "--size 60 must be a multiple of --patch 16" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "r"), "--compare", "--retentions", "0.1,1.5"]) == 2
    assert "retention_ratio must be in (0.0, 1.0], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # rejected before any work
    with pytest.raises(SystemExit):
        main(["demo", "--clips", "pan-zoom,dance"])
    assert "expected a comma-separated list of ['bigbuckbunny'" in capsys.readouterr().err


def user_video(tmp_path, frames=5, size=64, patch=16):
    """Frames in a folder of PNGs and their tokens in a .npz file."""
    import imageio.v3 as iio

    clip = demo_clip("moving-object", frames=frames, size=size, seed=3)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(clip.frames):
        iio.imwrite(folder / f"{t:03d}.png", frame)
    x = patch_features(clip.frames, patch, 24, seed=3)
    tokens = tmp_path / "video.npz"
    save_tensors(tokens, {"tokens": x, "cls_attn": importance(x)})
    return clip.frames, folder, tokens


def test_viz_draws_a_users_frames(tmp_path, capsys):
    frames, folder, tokens = user_video(tmp_path)
    fig = tmp_path / "fig.png"
    assert main(["viz", str(folder), str(tokens), "--out", str(fig), "--retention", "0.25"]) == 0
    text = capsys.readouterr().out
    assert "(4x4 grid)" in text and "fidelity" in text and f"figure     {fig}" in text
    check_png(fig)
    np.save(tmp_path / "frames.npy", frames)
    fig2 = tmp_path / "fig2.png"
    assert main(["viz", str(tmp_path / "frames.npy"), str(tokens), "--out", str(fig2),
                 "--strategy", "ats", "--grid", "4x4", "--show", "even"]) == 0
    check_png(fig2)


def test_viz_rejects_tokens_that_do_not_match_the_frames(tmp_path, capsys):
    frames, folder, tokens = user_video(tmp_path)
    np.save(tmp_path / "four.npy", frames[:4])
    assert main(["viz", str(tmp_path / "four.npy"), str(tokens)]) == 2
    assert "holds 4 frames but" in capsys.readouterr().err
    assert main(["viz", str(folder), str(tokens), "--grid", "2x4"]) == 2
    assert "grid 2x4 has 8 cells but the token file has 16 tokens" in capsys.readouterr().err
    x = patch_features(frames[:, :, :48], 16, 24)  # 4x3 tokens, but the frames are square
    odd = tmp_path / "odd.npz"
    save_tensors(odd, {"tokens": x, "cls_attn": importance(x)})
    assert main(["viz", str(folder), str(odd)]) == 2
    assert "cannot lay 12 tokens per frame over 64x64" in capsys.readouterr().err
    assert main(["viz", str(tmp_path / "nope"), str(tokens)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["viz", str(folder), str(tokens), "--show", "3:99"]) == 2
    assert "within 0..4" in capsys.readouterr().err


def _figure(strategy: str, retention: float = 0.25):
    """The figure of ``strategy`` on a 6-frame 64x64 photo clip (4x4 tokens per frame, one DySeg
    segment unless the content cuts, so that tokens merge over time)."""
    from flashvid.demo.baselines import STRATEGIES, run_strategy
    from flashvid.demo.figures import Labels, draw_compression

    clip = demo_clip("moving-object", frames=6, size=64)
    x = patch_features(clip.frames, 16, 32, 0)
    cfg = flashvid.FlashVIDConfig(retention_ratio=retention, complementary_segments=False)
    out = run_strategy(strategy, x, importance(x), cfg, (4, 4))
    assert (out.parents >= 0).any() or strategy not in ("flashvid", "ttm")  # something merged
    s = STRATEGIES[strategy]
    fig = draw_compression(clip.frames, out, (4, 4), show="0:4", labels=Labels(*s.stages,
                           pruning=s.pruning))
    return clip, out, fig


def _texts(fig) -> list[str]:
    texts = [ax.get_ylabel() for ax in fig.axes]
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
    return [t for t in texts if t]


def test_figure_rows_follow_the_strategy():
    _, _, fig = _figure("flashvid")
    assert len(fig.axes) == 3 * 4
    labels = [t for t in _texts(fig) if "\n" in t]
    assert labels == ["ADTS\nkept as-is", "TSTM\nmerged over time", "DPC-kNN\nspatial merge"]
    _, _, fig = _figure("ats")  # pruning: one row, named after the strategy, "dropped" explained
    assert len(fig.axes) == 4
    texts = _texts(fig)
    assert texts[0] == "attention top-k\nselection" and "dropped" in texts
    assert not any("ADTS" in t or "TSTM" in t for t in texts)
    _, _, fig = _figure("uniform")
    assert [t for t in _texts(fig) if "\n" in t] == ["uniform pooling\nspatial merge"]
    _, _, fig = _figure("ttm")
    assert [t for t in _texts(fig) if "\n" in t] == ["TTM\nmerged over time",
                                                      "DPC-kNN\nspatial merge"]
    assert not any("ADTS" in t or "dropped" in t for t in _texts(fig))


def test_adts_tokens_are_not_drawn_dark_in_the_cluster_row():
    from flashvid.demo.figures import _grey

    clip, out, fig = _figure("flashvid")
    adts = out.indices[out.kinds == flashvid.KIND_ADTS].tolist()
    assert (out.source >= 0).all()  # FlashVID drops nothing ...
    for j in range(4):  # ... and the cluster row shows its kept tokens as the plain grey frame
        image = np.asarray(fig.axes[2 * 4 + j].get_images()[0].get_array())
        grey = _grey(clip.frames[j])
        for p in [i % 16 for i in adts if i // 16 == j]:
            r, c = divmod(p, 4)
            cell = (slice(16 * r, 16 * r + 16), slice(16 * c, 16 * c + 16))
            assert np.allclose(image[cell], grey[cell]), (j, p)


def test_highlighted_trees_are_the_largest_in_the_shown_frames():
    from flashvid.demo.show import highlighted_trees

    # 3 frames x 4 tokens; trees: root 0 with 4 members, root 1 with 3, root 3 with 2 (only in
    # frames 0-1), token 2 alone
    parents = np.array([[-1, -1, -1, -1], [0, 1, -1, 0], [4, 5, -1, -1]])
    roots = np.array([[0, 1, 2, 3], [0, 1, 6, 0], [0, 1, 10, 11]])
    assert highlighted_trees(roots, parents, [0, 1, 2]) == [0, 1]
    assert highlighted_trees(roots, parents, [0, 1, 2], count=1) == [0]
    assert highlighted_trees(roots, parents, [2]) == [0, 1]  # one member each in frame 2
    assert highlighted_trees(roots, np.full((3, 4), -1), [0, 1]) == []
