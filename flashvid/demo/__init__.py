"""Real-photo demo, figures and the fidelity comparison of token-reduction strategies.

* :mod:`.clips` - short clips animated from photographs bundled with scikit-image;
* :mod:`.features` - patch tokens through a fixed seeded projection, and their importance;
* :mod:`.baselines` - the compared strategies (FlashVID, its TTM variant, uniform pooling, ATS,
  DTS, ADTS only, TSTM only, TTM only);
* :mod:`.metrics` - fidelity: cosine of each input token to the output row representing it;
* :mod:`.figures` / :mod:`.compare` - the per-clip figure, tables and the comparison plot;
* :mod:`.frames` - reading a user's frames for ``flashvid viz``;
* :mod:`.cli` - the ``demo`` and ``viz`` subcommands.

scikit-image, imageio and matplotlib are needed only here: ``pip install 'flashvid[demo]'``.
"""
