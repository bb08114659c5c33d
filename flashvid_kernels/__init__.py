"""Triton kernels of FlashVID (ADTS selection, TSTM edges). Never imports ``flashvid``."""
