"""FlashVID in lmms-eval: plugin models and the ``flashvid eval`` sweep (extra ``eval``).

* :mod:`flashvid.eval.plugin`: the ``lmms_eval.models`` entry point and the table of models
  (``flashvid_llava_hf``, ``flashvid_qwen2_5_vl``, ``flashvid_qwen3_vl``, ``flashvid_qwen3_5``);
* :mod:`flashvid.eval.models`: those models, subclasses of lmms-eval's own classes;
* :mod:`flashvid.eval.args`: the FlashVID ``--model_args`` (checked before weights load);
* :mod:`flashvid.eval.meter`: visual tokens per sample and prefill time, measured in
  ``generate()``;
* :mod:`flashvid.eval.sweep`, :mod:`flashvid.eval.rows`, :mod:`flashvid.eval.plots`,
  :mod:`flashvid.eval.cli`: ``flashvid eval`` (runs, result rows, PNG plots, command line).

Importing this package imports nothing but the standard library; lmms-eval is imported by
the modules that need it, when they run.
"""
