"""PyTorch port of the facial-expression MobileNetV2 that the PyPI package `facex` ships
(the network behind the ``facex_mobilenet`` extractor of :mod:`pipeline.extractors.facex_mobilenet`).

`facex/assets/model_optimized.tflite` (facex 1.1.0, MIT) is a Keras MobileNetV2 (alpha 1.0,
200x200x3 input) converted by TOCO with dynamic-range (hybrid) weight quantization, topped
by Flatten + Dense(7) + softmax. facex feeds it the grayscale Haar-cascade face crop resized
to 200x200 and replicated to three channels, in [0, 1]. The package does not say which
data set it was trained on.

The file is parsed with the flatbuffer schema that `ai-edge-litert` ships, so neither
TensorFlow nor facex itself (whose `__init__` imports TensorFlow) is imported; the weights
are dequantized to float32. The TFLite runtime quantizes activations on the fly in its
hybrid kernels, so the port matches it to quantization error, not bit for bit (the tests
bound the difference).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.extractors.mini_xception import _keras_same_padding
from pipeline.extractors.weights import FACEX_CLASSES  # noqa: F401  (the model's output order)

INPUT_SIZE = 200
EMBEDDING_DIM = 1280

# TFLite schema enums (tensorflow/lite/schema/schema.fbs); spelled out so that reading
# them needs no lookup in the generated module.
_OP_ADD, _OP_CONV, _OP_DEPTHWISE, _OP_DEQUANTIZE, _OP_DENSE, _OP_SOFTMAX, _OP_PAD = 0, 3, 4, 6, 9, 25, 34
_PADDING_SAME = 0
_ACTIVATION_NONE, _ACTIVATION_RELU6 = 0, 3
_NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


class TfliteModelError(ValueError):
    """The .tflite file is not the MobileNetV2 layout this port expects."""


@dataclass
class TfliteLayer:
    """One weighted TFLite op, its weights already in torch layout."""

    kind: str  # "conv", "depthwise" or "dense"
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    same_padding: bool
    relu6: bool
    explicit_padding: tuple[int, int, int, int] | None  # (left, right, top, bottom) of a PAD op feeding it
    quantized: bool  # weights stored as int8 for a hybrid kernel (the runtime also quantizes its input)


def _is_hybrid_weight(graph, index: int) -> bool:
    return graph.Tensors(index).Type() in (3, 9)


def _tensor_values(model, graph, index: int) -> np.ndarray:
    tensor = graph.Tensors(index)
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if isinstance(data, int):  # flatbuffers returns 0 for an empty buffer
        raise TfliteModelError(f"tensor {tensor.Name().decode()!r} has no constant data")
    values = np.frombuffer(data.tobytes(), dtype=_NUMPY_TYPES[tensor.Type()]).reshape(tensor.ShapeAsNumpy())
    quantization = tensor.Quantization()
    if values.dtype == np.float32 or quantization is None or quantization.ScaleLength() == 0:
        return values.astype(np.float32)
    if quantization.ScaleLength() != 1:
        raise TfliteModelError(f"tensor {tensor.Name().decode()!r}: per-channel quantization is not supported")
    zero_point = int(quantization.ZeroPoint(0)) if quantization.ZeroPointLength() else 0
    if values.dtype == np.uint8 and zero_point == 0:
        # TOCO's hybrid (weight-only) quantization stores symmetric int8 weights in a
        # tensor typed UINT8 with zero point 0; the hybrid kernels read the bytes as int8.
        values = values.view(np.int8)
    return ((values.astype(np.float32) - zero_point) * quantization.Scale(0)).astype(np.float32)


def _options(op, options_class):
    table = op.BuiltinOptions()
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    return options


def read_tflite_layers(path: Path) -> tuple[list[TfliteLayer], int]:
    """The weighted layers of a single-subgraph .tflite file in execution order, and its number of ADDs."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    if model.SubgraphsLength() != 1:
        raise TfliteModelError(f"{path}: expected one subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    produced: dict[int, np.ndarray] = {}  # DEQUANTIZE outputs
    padding_of: dict[int, tuple[int, int, int, int]] = {}  # PAD output tensor -> (left, right, top, bottom)
    layers, adds = [], 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        opcode = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        inputs, outputs = op.InputsAsNumpy().tolist(), op.OutputsAsNumpy().tolist()

        def constant(index: int) -> np.ndarray:
            return produced[index] if index in produced else _tensor_values(model, graph, index)

        if opcode == _OP_DEQUANTIZE:
            produced[outputs[0]] = _tensor_values(model, graph, inputs[0])
        elif opcode == _OP_PAD:
            amounts = constant(inputs[1]).astype(int)  # NHWC rows of (before, after)
            if amounts[0].any() or amounts[3].any():
                raise TfliteModelError(f"{path}: op {i} pads the batch or channel axis")
            padding_of[outputs[0]] = (amounts[2, 0], amounts[2, 1], amounts[1, 0], amounts[1, 1])
        elif opcode in (_OP_CONV, _OP_DEPTHWISE):
            options_class = schema.Conv2DOptions if opcode == _OP_CONV else schema.DepthwiseConv2DOptions
            options = _options(op, options_class)
            if options.StrideH() != options.StrideW():
                raise TfliteModelError(f"{path}: op {i} has unequal strides")
            if opcode == _OP_DEPTHWISE and options.DepthMultiplier() not in (0, 1):
                raise TfliteModelError(f"{path}: op {i} has depth multiplier {options.DepthMultiplier()}")
            kernel = constant(inputs[1])
            # TFLite conv [out,kh,kw,in] and depthwise [1,kh,kw,channels] -> torch [out,in/groups,kh,kw].
            weight = kernel.transpose(0, 3, 1, 2) if opcode == _OP_CONV else kernel.transpose(3, 0, 1, 2)
            layers.append(
                TfliteLayer(
                    kind="conv" if opcode == _OP_CONV else "depthwise",
                    weight=np.ascontiguousarray(weight),
                    bias=constant(inputs[2]),
                    stride=options.StrideH(),
                    same_padding=options.Padding() == _PADDING_SAME,
                    relu6=_activation(options.FusedActivationFunction(), path, i),
                    explicit_padding=padding_of.get(inputs[0]),
                    quantized=_is_hybrid_weight(graph, inputs[1]),
                )
            )
        elif opcode == _OP_DENSE:
            options = _options(op, schema.FullyConnectedOptions)
            layers.append(
                TfliteLayer("dense", constant(inputs[1]), constant(inputs[2]), 1, False,
                            _activation(options.FusedActivationFunction(), path, i), None,
                            quantized=_is_hybrid_weight(graph, inputs[1]))
            )
        elif opcode == _OP_ADD:
            adds += 1
        elif opcode != _OP_SOFTMAX:
            raise TfliteModelError(f"{path}: op {i} has unsupported builtin code {opcode}")
    return layers, adds


def _activation(code: int, path: Path, op_index: int) -> bool:
    if code not in (_ACTIVATION_NONE, _ACTIVATION_RELU6):
        raise TfliteModelError(f"{path}: op {op_index} has unsupported fused activation {code}")
    return code == _ACTIVATION_RELU6


class TfliteConv(nn.Module):
    """A TFLite CONV_2D / DEPTHWISE_CONV_2D with its explicit PAD or TF 'same' padding and fused ReLU6."""

    def __init__(self, layer: TfliteLayer) -> None:
        super().__init__()
        out_channels, in_per_group, kernel, _ = layer.weight.shape
        groups = out_channels if layer.kind == "depthwise" else 1
        self.conv = nn.Conv2d(in_per_group * groups, out_channels, kernel, layer.stride, groups=groups)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(layer.weight))
            self.conv.bias.copy_(torch.from_numpy(layer.bias))
        self.same_padding = layer.same_padding
        self.explicit_padding = layer.explicit_padding
        self.relu6 = layer.relu6
        self.quantized_weights = layer.quantized

    def forward(self, x: Tensor) -> Tensor:
        if self.explicit_padding is not None:
            x = F.pad(x, self.explicit_padding)
        if self.same_padding:
            kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
            top, bottom = _keras_same_padding(x.shape[-2], kernel, stride)
            left, right = _keras_same_padding(x.shape[-1], kernel, stride)
            x = F.pad(x, (left, right, top, bottom))
        x = self.conv(x)
        return F.relu6(x) if self.relu6 else x


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand] -> 3x3 depthwise -> 1x1 linear projection, + input when shapes allow."""

    def __init__(self, layers: list[TfliteLayer]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(TfliteConv(layer) for layer in layers))
        first, last = layers[0].weight, layers[-1].weight
        in_channels = first.shape[0] if layers[0].kind == "depthwise" else first.shape[1]
        self.residual = all(layer.stride == 1 for layer in layers) and in_channels == last.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


class FacexMobileNetV2(nn.Module):
    """facex's MobileNetV2: stem conv, 17 inverted-residual blocks, 1x1 conv to 1280, Flatten + Dense."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        layers, adds = read_tflite_layers(path)
        kinds = "".join(layer.kind[0] for layer in layers)
        # Keras MobileNetV2: stem conv, a block without expansion (depthwise, project),
        # 16 blocks of (expand, depthwise, project), the 1280 conv, the Dense classifier.
        # Kinds by initial: c(onv), d(epthwise), and the Dense head written as "D".
        kinds = kinds[:-1] + "D" if layers and layers[-1].kind == "dense" else kinds
        if kinds != "c" + "dc" + "cdc" * 16 + "c" + "D":
            raise TfliteModelError(f"{path}: layer sequence {kinds!r} is not a Keras MobileNetV2 with a Dense head")
        self.stem = TfliteConv(layers[0])
        groups = [layers[1:3]] + [layers[3 + 3 * b : 6 + 3 * b] for b in range(16)]
        self.blocks = nn.ModuleList(InvertedResidual(group) for group in groups)
        self.head = TfliteConv(layers[-2])
        residuals = sum(block.residual for block in self.blocks)
        if residuals != adds:
            raise TfliteModelError(f"{path}: the graph has {adds} residual additions, the port found {residuals}")
        dense = layers[-1]
        if dense.relu6:
            raise TfliteModelError(f"{path}: the Dense head has a fused activation")
        self.classifier = nn.Linear(dense.weight.shape[1], dense.weight.shape[0])
        self.classifier.quantized_weights = dense.quantized
        # oneDNN runs the depthwise convs ~2x faster on CPU with channels_last weights; same outputs.
        self.to(memory_format=torch.channels_last)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.from_numpy(dense.weight))
            self.classifier.bias.copy_(torch.from_numpy(dense.bias))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: [N,3,200,200] in [0,1] -> (embedding [N,1280], logits [N,7]).

        softmax(logits) is the TFLite model's output; the embedding is the global average of
        the last 1x1 conv's ReLU6 map (the Dense layer reads that map flattened, NHWC order).
        """
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            x = block(x)
        x = self.head(x)
        logits = self.classifier(x.permute(0, 2, 3, 1).flatten(1))
        return x.mean(dim=(2, 3)), logits


def preprocess_gray_for_facex(gray_uint8: Tensor) -> Tensor:
    """[N,H,W] uint8 grayscale faces -> [N,3,200,200] float in [0,1], as facex feeds its model
    (gray replicated to three channels; bilinear resize)."""
    x = gray_uint8.float().unsqueeze(1) / 255.0
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=x.shape[-1] > INPUT_SIZE)
    return x.expand(-1, 3, -1, -1)
