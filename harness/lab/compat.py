"""What differs between the transformers versions the matrix spans, in one place."""

from __future__ import annotations

import importlib.abc
import inspect
import sys

from harness.env.stack import dist_version


def transformers_major() -> int:
    return int((dist_version("transformers") or "0").split(".")[0])


def dtype_kwarg(dtype) -> dict:
    """``from_pretrained``'s dtype argument: ``dtype`` in transformers 5, ``torch_dtype`` in 4.x."""
    return {"dtype": dtype} if transformers_major() >= 5 else {"torch_dtype": dtype}


def allow_cpu_bitsandbytes() -> None:
    """Let old transformers load bitsandbytes 4-bit on a machine without CUDA, from now on in this process.

    transformers <4.52 refuses (4.47/4.48 even crash on a frozenset in their multi-backend branch)
    in ``validate_bnb_backend_availability``, although bitsandbytes >=0.48 quantizes nf4 on CPU.
    Only that environment check is lifted, and only where it refuses; newer transformers pass it.
    The check is asked when transformers' bitsandbytes integration is first imported (by the first
    4-bit load, the harness's or a release's), not here: importing it costs 3-5 s, which a process
    that never quantizes (most child pytest runs) does not pay.
    """
    module = sys.modules.get(BNB_INTEGRATION)
    if module is not None:
        _lift_if_refused(module)
    elif not any(isinstance(finder, _LiftOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LiftOnImport())


BNB_INTEGRATION = "transformers.integrations.bitsandbytes"  # where every matrix version defines the check


class _LiftOnImport(importlib.abc.MetaPathFinder):
    """Finds transformers' bitsandbytes integration as the other finders would, and asks its check right after
    the module runs, before anything can call it."""

    def find_spec(self, name, path, target=None):
        if name != BNB_INTEGRATION:
            return None
        spec = next(
            (
                found
                for finder in sys.meta_path
                if finder is not self and hasattr(finder, "find_spec")
                for found in [finder.find_spec(name, path, target)]
                if found is not None
            ),
            None,
        )
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            _lift_if_refused(module)

        spec.loader.exec_module = exec_module
        return spec


def _lift_if_refused(module) -> None:
    check = getattr(module, "validate_bnb_backend_availability", None)
    if check is None or check in _PASSED:
        return
    try:
        check(raise_exception=True)
        _PASSED.add(check)  # asking again costs a backend probe (~50 ms) on every 4-bit load
    except Exception:  # noqa: BLE001 - any refusal of the CPU backend
        module.validate_bnb_backend_availability = _backend_available
        # the lazy package caches what it handed out; `from ..integrations import ...` reads it there
        package = sys.modules.get(BNB_INTEGRATION.rpartition(".")[0])
        if package is not None and "validate_bnb_backend_availability" in vars(package):
            package.validate_bnb_backend_availability = _backend_available


def _backend_available(*args, **kwargs) -> bool:
    return True


_PASSED: set = {_backend_available}


def casts_pixels_to_vision_weight_dtype() -> bool:
    """Whether the installed transformers casts pixel_values to ``visual.get_dtype()`` (the dtype of a
    vision weight: uint8 when 4-bit; up to 4.51) rather than ``visual.dtype`` (from 4.52.1)."""
    import transformers.models.qwen2_vl.modeling_qwen2_vl as qwen2_vl

    return "visual.get_dtype()" in inspect.getsource(qwen2_vl)


def image_only_processor(processor_class: str, **parts):
    """``transformers.<processor_class>`` of these parts that needs no torchvision.

    From transformers 4.52 the Qwen-VL processors insist on a video processor and check it against
    ``transformers.BaseVideoProcessor``, which without torchvision is a dummy nothing is an instance of;
    every version resolves that name through ``get_possibly_dynamic_module`` (4.52 in ``__init__``, 4.53
    on in ``check_argument_for_proper_class``). Images never reach the video processor, so the
    torchvision-free base class stands in, and the name resolves to it.
    """
    import transformers

    cls = getattr(transformers, processor_class)
    get_attributes = getattr(cls, "get_attributes", None)  # 4.x: a class list
    if "video_processor" not in (get_attributes() if get_attributes else cls.attributes):  # Qwen2-VL up to 4.51
        return cls(**parts)
    from transformers.video_processing_utils import BaseVideoProcessor

    class ImageOnlyProcessor(cls):
        @staticmethod
        def get_possibly_dynamic_module(module_name):
            if module_name == "BaseVideoProcessor":
                return BaseVideoProcessor
            return cls.get_possibly_dynamic_module(module_name)

    return ImageOnlyProcessor(video_processor=BaseVideoProcessor(), **parts)
