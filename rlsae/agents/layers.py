"""The hookable layers of each architecture, readable without torch (the CLI and the study
check a layer name before loading anything).

======  ===========================================  ==========================================
arch    layer: width                                 module in ``model.q_net``
======  ===========================================  ==========================================
poster  ``conv3``: 960, ``fc1``: 512, ``fc2``: 512     ``features_extractor.{flatten,fc1,fc2}``
nature  ``conv3``: 3136, ``fc1``: 512                  ``features_extractor.{cnn,linear}``
======  ===========================================  ==========================================

The networks themselves are in :mod:`rlsae.agents.networks` (a test checks these widths against
the modules' outputs).
"""

from __future__ import annotations

from rlsae.errors import RlsaeError

# layer name -> (attribute path under model.q_net, width, modules that follow it up to the head)
LAYERS: dict[str, dict[str, tuple[str, int, tuple[str, ...]]]] = {
    "poster": {
        "conv3": (
            "features_extractor.flatten",
            960,
            ("features_extractor.fc1", "features_extractor.fc2"),
        ),
        "fc1": ("features_extractor.fc1", 512, ("features_extractor.fc2",)),
        "fc2": ("features_extractor.fc2", 512, ()),
    },
    "nature": {
        "conv3": ("features_extractor.cnn", 3136, ("features_extractor.linear",)),
        "fc1": ("features_extractor.linear", 512, ()),
    },
}
HEAD = "q_net"  # the linear Q head inside SB3's QNetwork: model.q_net.q_net (Sequential(Linear))


def layer_widths(arch: str) -> dict[str, int]:
    """Hookable layer names and their widths for an architecture."""
    return {name: spec[1] for name, spec in LAYERS[arch].items()}


def check_layer(arch: str, layer: str) -> tuple[str, int, tuple[str, ...]]:
    """The spec of ``layer``; an unknown name raises an error listing the valid ones."""
    specs = LAYERS.get(arch)
    if specs is None:
        raise RlsaeError(f"unknown architecture {arch!r}; use nature or poster")
    if layer not in specs:
        valid = ", ".join(f"{n} ({w})" for n, w in layer_widths(arch).items())
        raise RlsaeError(f"unknown layer {layer!r} for a {arch} agent; valid layers: {valid}")
    return specs[layer]
