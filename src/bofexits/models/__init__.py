"""The networks: the BoF layer, exit heads, the multi-exit network over any backbone, and the
reference backbones behind a registry (`get_model` / `list_models`, as in torchvision).

* `bof`: soft quantisation + histogram pooling (docs/method.md §2); `kmeans` initialises it.
* `exits`: hierarchical BoF exits sharing one histogram space and classifier (§3);
  `baseline_exits`: the SDN pooled and BranchyNet conv heads they are compared with.
* `multiexit`: stages + exits, cut from an `nn.Sequential` or named layers (§1).
* `backbones`: registered reference networks; `build`: a `ModelConfig` -> network.
* `vision`: torchvision classifiers cut into stages (`attach`, the `tv:` backbones); importing
  it registers the `tv:` names, torchvision itself loads only when one is built.
* `folded`: inference forms (BatchNorm folded, exit constants precomputed), same results.
"""

from __future__ import annotations

from bofexits.models.backbones import Backbone, create_backbone, list_backbones, register_backbone
from bofexits.models.baseline_exits import ConvExits, PooledLinearExits
from bofexits.models.bof import BoFPooling
from bofexits.models.exits import BoFExits, ExitHeads
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.models.vision import attach

#: torchvision's names for the registry: `get_model("vgg28", num_classes=10)`, `list_models("vgg*")`.
get_model = create_backbone
list_models = list_backbones

__all__ = [
    "Backbone",
    "BoFExits",
    "BoFPooling",
    "ConvExits",
    "ExitHeads",
    "MultiExitNetwork",
    "PooledLinearExits",
    "attach",
    "create_backbone",
    "get_model",
    "list_backbones",
    "list_models",
    "register_backbone",
]
