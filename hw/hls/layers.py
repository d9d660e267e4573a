"""convforge's custom hls4ml layers, registered through hls4ml's extension API.

hls4ml 1.3 has no layer for CoDeNet's deformable operators and cannot express
INTEGER_SPEC §3's per-channel requantisation as an ``ap_fixed`` cast (one ``(M, S)`` per
channel, round half up, saturation to a folded activation range). Each operator below is
an hls4ml IR layer (:class:`hls4ml.model.layers.Layer`), a config template, a function
template, and C++ in ``templates/nnet_convforge.h`` (copied into every project by
``backend.register_source``), exactly as hls4ml's own ``test_extensions.py`` registers
custom layers.

======================  ==========================  =================================================
hls4ml class            QGraph op                   why not an hls4ml layer
======================  ==========================  =================================================
``CfRequant``           requant of conv/deform ops  per-channel (M, S) is not an ap_fixed type
``CfSquareDeformDW``    ``square_deform_dw``        no per-pixel dilation in hls4ml
``CfBilinearDeform``    ``bilinear_deform``         no deformable convolution in hls4ml
``CfAdd``               ``add``                     hls4ml's Add has no (Ma, Mb, S) rescaling
``CfMaxPool``           ``maxpool`` (k != s or p>0) io_stream pooling needs p = 0, k = s; zero pads
``CfSlice``             ``split`` (one per output)  hls4ml 1.3 has no channel split
``CfShuffle``           ``shuffle``                 no channel permutation layer for io_stream
======================  ==========================  =================================================

All layers are io_stream, channels-last (one stream element per pixel holding all its
channels), and produce exactly the integers of the integer reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEADER = Path(__file__).with_name("templates") / "nnet_convforge.h"
INCLUDE = ["nnet_utils/nnet_convforge.h"]

_registered: set[str] = set()


def _int_type(bits: int, signed: bool = True):
    from hls4ml.model.types import IntegerPrecisionType

    return IntegerPrecisionType(width=int(bits), signed=bool(signed))


def _n_pixels(shape) -> int:
    return int(np.prod(shape[:-1]))


def _build_classes():
    """Define the hls4ml classes (hls4ml is imported lazily: it is an optional extra)."""
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
    from hls4ml.model.attributes import Attribute
    from hls4ml.model.layers import Layer

    class _Unary(Layer):
        """One input stream, output shape from ``out_shape`` (H, W, C) and ``out_bits``/``out_signed``."""

        def initialize(self):
            self.add_output_variable(
                [int(s) for s in self.attributes["out_shape"]],
                precision=_int_type(self.attributes["out_bits"], self.attributes["out_signed"]),
            )

    class CfRequant(_Unary):
        _expected_attributes = [Attribute("lo"), Attribute("hi"), Attribute("prod_bits"), Attribute("bias_bits")]

        def initialize(self):
            super().initialize()
            self.add_weights_variable(
                name="bias", var_name="b{index}", precision=_int_type(self.attributes["bias_bits"]),
                data=np.asarray(self.attributes["bias_data"], dtype=np.int64),
            )
            self.add_weights_variable(
                name="mult", var_name="m{index}", precision=_int_type(16, signed=False),
                data=np.asarray(self.attributes["mult_data"], dtype=np.int64),
            )
            self.add_weights_variable(
                name="shift", var_name="s{index}", precision=_int_type(7, signed=False),
                data=np.asarray(self.attributes["shift_data"], dtype=np.int64),
            )

    class CfSquareDeformDW(_Unary):
        _expected_attributes = [Attribute("stride"), Attribute("d_max"), Attribute("weight_bits")]

        def initialize(self):
            super().initialize()
            self.add_weights_variable(
                name="weight", var_name="w{index}", precision=_int_type(self.attributes["weight_bits"]),
                data=np.asarray(self.attributes["weight_data"], dtype=np.int64),
            )

    class CfBilinearDeform(_Unary):
        _expected_attributes = [
            Attribute("stride"), Attribute("pad"), Attribute("dilation"), Attribute("groups"),
            Attribute("frac_bits"), Attribute("range"), Attribute("weight_bits"), Attribute("sample_bits"),
        ]

        def initialize(self):
            super().initialize()
            self.add_weights_variable(
                name="weight", var_name="w{index}", precision=_int_type(self.attributes["weight_bits"]),
                data=np.asarray(self.attributes["weight_data"], dtype=np.int64),
            )

    class CfAdd(_Unary):
        _expected_attributes = [
            Attribute("mult_a"), Attribute("mult_b"), Attribute("shift"), Attribute("lo"), Attribute("hi"),
            Attribute("prod_bits"),
        ]

    class CfMaxPool(_Unary):
        _expected_attributes = [Attribute("pool_size"), Attribute("stride"), Attribute("pad")]

    class CfSlice(_Unary):
        _expected_attributes = [Attribute("first")]

    class CfShuffle(_Unary):
        _expected_attributes = [Attribute("groups")]

    # -- templates -----------------------------------------------------------------------

    def geometry(node) -> dict:
        inp = node.get_input_variable(node.inputs[0]).shape
        out = node.get_output_variable().shape
        return {
            "in_height": inp[0], "in_width": inp[1], "n_chan": inp[-1],
            "out_height": out[0], "out_width": out[1], "n_filt": out[-1],
            "n_pixels": _n_pixels(out),
        }

    config_templates = {
        CfRequant: """struct config{index} : nnet::cf_requant_config {{
    static const unsigned n_pixels = {n_pixels};
    static const unsigned n_chan = {n_filt};
    static const int lo = {lo};
    static const int hi = {hi};
    static const unsigned prod_bits = {prod_bits};
    typedef {bias_type} bias_t;
    typedef {mult_type} mult_t;
    typedef {shift_type} shift_t;
}};\n""",
        CfAdd: """struct config{index} : nnet::cf_add_config {{
    static const unsigned n_pixels = {n_pixels};
    static const unsigned n_chan = {n_filt};
    static const long long mult_a = {mult_a};
    static const long long mult_b = {mult_b};
    static const unsigned shift = {shift};
    static const int lo = {lo};
    static const int hi = {hi};
    static const unsigned prod_bits = {prod_bits};
}};\n""",
        CfSquareDeformDW: """struct config{index} : nnet::cf_square_deform_config {{
    static const unsigned in_height = {in_height};
    static const unsigned in_width = {in_width};
    static const unsigned n_chan = {n_chan};
    static const unsigned out_height = {out_height};
    static const unsigned out_width = {out_width};
    static const unsigned stride = {stride};
    static const unsigned d_max = {d_max};
    typedef {weight_type} weight_t;
}};\n""",
        CfBilinearDeform: """struct config{index} : nnet::cf_bilinear_deform_config {{
    static const unsigned in_height = {in_height};
    static const unsigned in_width = {in_width};
    static const unsigned n_chan = {n_chan};
    static const unsigned n_filt = {n_filt};
    static const unsigned groups = {groups};
    static const unsigned out_height = {out_height};
    static const unsigned out_width = {out_width};
    static const unsigned stride = {stride};
    static const int pad = {pad};
    static const unsigned dilation = {dilation};
    static const unsigned frac_bits = {frac_bits};
    static const unsigned range = {range};
    typedef {weight_type} weight_t;
    typedef ap_int<{sample_bits}> sample_t;
}};\n""",
        CfMaxPool: """struct config{index} : nnet::cf_maxpool_config {{
    static const unsigned in_height = {in_height};
    static const unsigned in_width = {in_width};
    static const unsigned n_chan = {n_chan};
    static const unsigned out_height = {out_height};
    static const unsigned out_width = {out_width};
    static const unsigned pool_size = {pool_size};
    static const unsigned stride = {stride};
    static const int pad = {pad};
}};\n""",
        CfSlice: """struct config{index} : nnet::cf_slice_config {{
    static const unsigned n_pixels = {n_pixels};
    static const unsigned n_chan_in = {n_chan};
    static const unsigned first = {first};
    static const unsigned n_chan = {n_filt};
}};\n""",
        CfShuffle: """struct config{index} : nnet::cf_shuffle_config {{
    static const unsigned n_pixels = {n_pixels};
    static const unsigned n_chan = {n_filt};
    static const unsigned groups = {groups};
}};\n""",
    }

    function_templates = {
        CfRequant: "nnet::cf_requant<{input_t}, {output_t}, {config}>({input}, {output}, {bias}, {mult}, {shift});",
        CfAdd: "nnet::cf_add<{input1_t}, {input2_t}, {output_t}, {config}>({input1}, {input2}, {output});",
        CfSquareDeformDW: (
            "nnet::cf_square_deform_dw<{input1_t}, {input2_t}, {output_t}, {config}>({input1}, {input2}, {output}, "
            "{weight});"
        ),
        CfBilinearDeform: (
            "nnet::cf_bilinear_deform<{input1_t}, {input2_t}, {output_t}, {config}>({input1}, {input2}, {output}, "
            "{weight});"
        ),
        CfMaxPool: "nnet::cf_maxpool<{input_t}, {output_t}, {config}>({input}, {output});",
        CfSlice: "nnet::cf_slice<{input_t}, {output_t}, {config}>({input}, {output});",
        CfShuffle: "nnet::cf_shuffle<{input_t}, {output_t}, {config}>({input}, {output});",
    }

    def weight_params(node) -> dict:
        from hls4ml.model.types import WeightVariable

        params = {}
        for name in ("bias", "mult", "shift", "weight"):
            var = node.attributes.get(name)
            if isinstance(var, WeightVariable):
                params[name] = var.name
                params[f"{name}_type"] = var.type.name
        return params

    templates = []
    for cls, text in config_templates.items():

        class _Config(LayerConfigTemplate):
            def __init__(self, cls=cls, text=text):
                super().__init__(cls)
                self.template = text

            def format(self, node):
                params = self._default_config_params(node)
                params.update(geometry(node))
                params.update(weight_params(node))
                return self.template.format(**params)

        _Config.__name__ = f"{cls.__name__}ConfigTemplate"
        templates.append(_Config)

    for cls, text in function_templates.items():

        class _Function(FunctionCallTemplate):
            def __init__(self, cls=cls, text=text):
                super().__init__(cls, include_header=INCLUDE)
                self.template = text

            def format(self, node):
                params = self._default_function_params(node)
                params.update(weight_params(node))
                for i, name in enumerate(node.inputs, start=1):
                    var = node.get_input_variable(name)
                    params[f"input{i}"] = var.name
                    params[f"input{i}_t"] = var.type.name
                return self.template.format(**params)

        _Function.__name__ = f"{cls.__name__}FunctionTemplate"
        templates.append(_Function)

    classes = {
        c.__name__: c for c in (CfRequant, CfSquareDeformDW, CfBilinearDeform, CfAdd, CfMaxPool, CfSlice, CfShuffle)
    }
    return classes, templates


_classes: dict | None = None
_templates: list | None = None


def custom_layer_classes() -> dict:
    """``{class_name: hls4ml Layer subclass}`` of convforge's custom layers."""
    global _classes, _templates
    if _classes is None:
        _classes, _templates = _build_classes()
    return _classes


def register_extensions(backend_name: str = "Vitis") -> None:
    """Register convforge's layers, templates and C++ with hls4ml (idempotent).

    Raises:
        ImportError: hls4ml is not installed (``pip install 'convforge[hls]'``).
    """
    if backend_name in _registered:
        return
    import hls4ml

    classes = custom_layer_classes()
    for name, cls in classes.items():
        if name not in hls4ml.model.layers.layer_map:
            hls4ml.model.layers.register_layer(name, cls)
    backend = hls4ml.backends.get_backend(backend_name)
    for template in _templates:
        backend.register_template(template)
    backend.register_source(HEADER)
    _registered.add(backend_name)
