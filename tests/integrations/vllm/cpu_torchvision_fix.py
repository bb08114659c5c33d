"""Test-environment fix: PyPI's torchvision next to the CPU build of torch (vLLM's CPU wheel).

The registry's torchvision is built against CUDA torch; with the CPU torch its compiled ops
(``_C.so``) do not load, and its ``_meta_registrations`` then fails at import
(``operator torchvision::nms does not exist``). transformers imports torchvision whenever it is
installed, so ``import vllm`` fails. ``make test-vllm`` copies this file into the vLLM test
environment with a ``.pth`` line that installs :class:`_Finder`: before torchvision is first
imported, it tries to load torchvision's compiled ops; only if that fails does it declare the
two operator schemas that ``_meta_registrations`` needs (nothing calls them: Qwen's video
processor uses the pure-Python transforms). GPU machines with a matching torchvision never
reach the fallback. Not part of the plugin, not installed by ``pip install flashvid[vllm]``.
"""

import importlib.abc
import importlib.util
import os
import sys


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return spec
        import torch

        lib = os.path.join(list(spec.submodule_search_locations)[0], "_C.so")
        try:
            torch.ops.load_library(lib)
        except (OSError, RuntimeError):
            defs = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
            defs.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            defs.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _Finder.keep = defs  # the schemas live as long as the Library object
        return spec


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


if __name__ == "__main__":
    # `python tests/integrations/vllm/cpu_torchvision_fix.py` (run by `make test-vllm`): copy
    # this file into the running environment's site-packages with a .pth line that installs
    # the finder.
    import shutil
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    shutil.copy(__file__, os.path.join(site, "_flashvid_cpu_torchvision_fix.py"))
    with open(os.path.join(site, "_flashvid_cpu_torchvision_fix.pth"), "w") as pth:
        pth.write("import _flashvid_cpu_torchvision_fix as fix; fix.install()\n")
    print(f"torchvision fallback for CPU torch installed in {site}")
