"""ImageNet weights for the backbones, the way users get them, and the way offline machines do.

Weakly-supervised segmentation starts from an ImageNet-pretrained network: that is where a
classifier's CAMs get their shapes. On a machine with internet, :func:`imagenet_state_dict` takes
torchvision's own weights (its ``IMAGENET1K_V1`` enums, downloaded on first use and cached by torch
hub). On an offline machine (a compute node, CI) a local ``state_dict`` file serves instead:

* the ``weights_file`` argument, or
* the environment variable :data:`WEIGHTS_DIR_ENV` naming a folder holding one ``<arch>*.pth``
  file per architecture (e.g. ``mobilenet_v2_imagenet.pth``).

A local file is read with ``torch.load(..., weights_only=True)`` (no code runs from it) and checked
key by key and shape by shape against the network before loading (:func:`check_state_dict`); a
file of another architecture is refused with the keys at fault. When neither source is available,
:class:`WeightsUnavailableError` says how to provide one.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from .errors import DataFileError, WsssError, check_choice

ARCHITECTURES = ("mobilenet_v2", "resnet50", "vgg16")
"""The torchvision ImageNet classifiers the package's backbones are cut from."""
WEIGHTS_DIR_ENV = "WSSS_WEIGHTS_DIR"
"""Environment variable: a folder of local ImageNet ``state_dict`` files, one ``<arch>*.pth`` each."""


class WeightsUnavailableError(WsssError, RuntimeError):
    """Neither torchvision's download nor a local weights file could provide ImageNet weights."""


def local_weights_file(arch: str, weights_file=None) -> Path | None:
    """The local ``state_dict`` file to use for ``arch``: ``weights_file`` when given (it must
    exist), else the one ``<arch>*.pth`` in the folder named by :data:`WEIGHTS_DIR_ENV` (when that
    variable is set), else None (use torchvision's download)."""
    check_choice("arch", arch, ARCHITECTURES)
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise DataFileError(
                f"weights file {path} does not exist; give the path of a {arch} "
                f"ImageNet state_dict (.pth)"
            )
        return path
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return None
    found = sorted(Path(folder).expanduser().glob(f"{arch}*.pth"))
    if len(found) > 1:
        raise DataFileError(
            f"{WEIGHTS_DIR_ENV}={folder} holds several {arch}*.pth files "
            f"({[p.name for p in found]}); keep one, or pass weights_file"
        )
    if not found:
        raise DataFileError(
            f"{WEIGHTS_DIR_ENV}={folder} holds no {arch}*.pth file; put the {arch} "
            f"ImageNet state_dict there, or unset {WEIGHTS_DIR_ENV} to download "
            "torchvision's weights"
        )
    return found[0]


def check_state_dict(expected: dict, given: dict, source) -> None:
    """Raise :class:`DataFileError` naming ``source`` when ``given`` (a loaded state_dict) lacks
    keys of ``expected`` (the network's own), has keys it does not know, or holds a tensor of
    another shape (first few of each listed)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k}: {tuple(given[k].shape)} instead of {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{len(missing)} missing keys (e.g. {missing[:3]})" if missing else "",
            f"{len(unexpected)} unknown keys (e.g. {unexpected[:3]})" if unexpected else "",
            f"{len(shapes)} tensors of another shape ({shapes[:3]})" if shapes else "",
        ]
        raise DataFileError(
            f"weights {source} do not fit this network: "
            f"{'; '.join(p for p in parts if p)}. Is it a state_dict of the right "
            "architecture (torchvision's, 1000 ImageNet classes)?"
        )


def _torchvision_state_dict(arch: str) -> dict:
    from torchvision.models import get_model_weights

    weights = get_model_weights(arch).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except Exception as e:  # no network, a proxy, a broken cache: all end the same way
        raise WeightsUnavailableError(
            f"could not get torchvision's ImageNet weights for {arch} ({type(e).__name__}: {e}). "
            f"On a machine with internet they download once into torch hub's cache; offline, give a "
            f"local state_dict: weights_file=..., or set {WEIGHTS_DIR_ENV} to a folder holding "
            f"{arch}*.pth (see wsss_edu.pretrained)."
        ) from e


def imagenet_state_dict(arch: str, weights_file=None) -> tuple[dict, str]:
    """(the ImageNet ``state_dict`` of torchvision's ``arch`` classifier, where it came from): the
    local file of :func:`local_weights_file` when there is one (read with ``weights_only=True``),
    else torchvision's ``IMAGENET1K_V1`` weights."""
    path = local_weights_file(arch, weights_file)
    if path is None:
        return _torchvision_state_dict(arch), f"torchvision {arch} IMAGENET1K_V1"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataFileError(
            f"cannot read weights file {path} ({type(e).__name__}: {e}); it must be a "
            "state_dict saved with torch.save (a truncated download? fetch it again)"
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataFileError(
            f"weights file {path} is not a state_dict (a dict of tensors); save "
            "model.state_dict(), not the model"
        )
    return state, str(path)


def torchvision_classifier(
    arch: str, weights: str | None = None, weights_file=None, **kwargs
) -> nn.Module:
    """torchvision's ``arch`` classifier built with ``kwargs`` (e.g. a ResNet's
    ``replace_stride_with_dilation``), from scratch (``weights=None``) or with its ImageNet
    weights (``'imagenet'``: :func:`load_imagenet`). What the package's backbones are cut from."""
    from torchvision import models

    check_choice("arch", arch, ARCHITECTURES)
    check_choice("weights", weights, (None, "imagenet"))
    net = getattr(models, arch)(weights=None, **kwargs)
    return load_imagenet(net, arch, weights_file) if weights == "imagenet" else net


def load_imagenet(net: nn.Module, arch: str, weights_file=None, drop: tuple = ()) -> nn.Module:
    """Load the ImageNet weights of :func:`imagenet_state_dict` into ``net``, a torchvision
    ``arch`` classifier built with ``weights=None`` (strides or dilations changed are fine: they
    do not change the tensors), after :func:`check_state_dict`. ``drop``: key prefixes of the
    classifier that ``net`` does not have (e.g. ``('fc.',)`` for a ResNet's feature extractor).
    Returns ``net``."""
    state, source = imagenet_state_dict(arch, weights_file)
    state = {k: v for k, v in state.items() if not k.startswith(tuple(drop))}
    check_state_dict(net.state_dict(), state, source)
    net.load_state_dict(state, strict=True)
    return net
