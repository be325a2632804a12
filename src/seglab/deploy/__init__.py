"""Exporting a model folder to other runtimes (ONNX Runtime, OpenVINO, int8, bf16) and
recording the ones that agree with PyTorch: ``seglab.export(model_dir)``. Depends on
inference; inference only reads the ``backends.json`` this writes."""

from seglab.deploy.convert import export_onnx, quantize_int8, quantize_openvino_int8
from seglab.deploy.verify import (
    EXPORTS,
    export,
    sample_inputs,
    time_backend,
)
from seglab.metrics import agreement, mask_dice

__all__ = ["EXPORTS", "agreement", "export", "export_onnx", "mask_dice", "quantize_int8",
           "quantize_openvino_int8", "sample_inputs", "time_backend"]
