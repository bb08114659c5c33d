"""The stages of the fast path, one module each, in pipeline order:
``dyseg`` -> ``adts`` -> ``tstm`` -> ``trees`` -> ``dpc`` -> ``assemble``.

Each stage returns decisions (segments, picks, edges and merges, roots and tree values, cluster
assignments and centres); ``assemble`` alone builds the output rows. The heavy per-frame work
comes from a backend (``flashvid.backends``); nothing here synchronises with the device except
where a docstring says so (the pipeline fetches the host-side sizes it needs).
"""
