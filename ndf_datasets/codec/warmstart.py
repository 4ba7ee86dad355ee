"""Warm starts for ``ndf train-base --init``: another run's weights into this network's config.

Kept apart from :mod:`training` (the loop, checkpoints, export): these are the rules for what may
differ between the checkpoint and the network, and how a layer that grew or shrank is filled so
that a design probe starts from a trained network instead of from scratch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .fields.hyper_net import GDN

__all__ = ["init_weights"]


def init_weights(net: torch.nn.Module, path: Path) -> None:
    """Load another run's weights. Modules this network adds (the checkerboard context ``cb.*``,
    the four-pass context's diagonal layers ``cd1.*`` / ``cd2.*``, each starting with a zero
    output) may be missing from it; residual predictors (``lrp*``) it holds are dropped
    when this network has none; layers this network has wider (hidden widths such as the
    synthesis ``Ns``, the hyper features ``Hf`` or the entropy networks' ``Hc``) are widened by
    :func:`_widen`, so the new run starts from the same network; a narrower synthesis keeps the checkpoint's strongest
    channels (:func:`_narrow_synthesis`: that start is a much worse decoder, which the new run
    has to retrain). Nothing else may differ."""
    state = dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    own = net.state_dict()
    if "gs1.weight" in own and "gs1.weight" in state and state["gs1.weight"].shape[1] > own["gs1.weight"].shape[1]:
        state = _narrow_synthesis(state, own["gs1.weight"].shape[1])
    state = _widen(net, own, state, path)
    for k in [k for k in state if k.startswith("lrp") and k not in own]:
        del state[k]
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shapes of another config
        raise ValueError(f"{path} does not fit this network (another config?): {str(exc).splitlines()[-1].strip()}") from None
    bad = [k for k in missing if not k.startswith(("cb.", "cd1.", "cd2."))] + list(unexpected)
    if bad:
        raise ValueError(f"{path} does not fit this network: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")


def _narrow_synthesis(state: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """``state`` with its synthesis (``gs1``, inverse GDN, ``gs2``) cut to ``width`` channels:
    those whose input and output weights have the largest product of norms. The inverse GDN
    couples the channels, so the cut decoder is far from the checkpoint's (measured: 35.5 dB
    to 12.5 dB when 64 channels are cut to 48); the analysis and entropy model are kept."""
    w1, w2 = state["gs1.weight"], state["gs2.weight"]  # transposed convs: in x out x k x k
    strength = w1.transpose(0, 1).flatten(1).norm(dim=1) * w2.flatten(1).norm(dim=1)
    keep = strength.argsort(descending=True)[:width].sort().values
    out = dict(state)
    out["gs1.weight"], out["gs1.bias"] = w1[:, keep].clone(), state["gs1.bias"][keep].clone()
    out["igdn.beta"] = state["igdn.beta"][keep].clone()
    out["igdn.gamma"] = state["igdn.gamma"][keep][:, keep].clone()
    out["gs2.weight"] = w2[keep].clone()
    return out


def _widen(
    net: torch.nn.Module, own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """``state`` with every tensor that is smaller than ``net``'s embedded so that the network
    computes the same function (Net2Net-style): a new unit takes ``net``'s fresh input weights,
    scaled by 0.1, a zero bias, and zero weights wherever a layer reads it; a new GDN channel a
    unit ``beta`` and only its own ``gamma`` term, so the old channels' normalisation does not see
    it. Training then grows the new units. Tensors may only grow, never shrink. ``own``: ``net``'s
    state dict."""
    transposed = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, torch.nn.ConvTranspose2d)}
    gdn = {n for n, m in net.named_modules() if isinstance(m, GDN)}
    grown_hf = _grown_hyper_features(own, state)
    out = dict(state)
    for k, old in state.items():
        if k not in own or own[k].shape == old.shape:
            continue
        new = own[k]
        if old.ndim != new.ndim or any(a > b for a, b in zip(old.shape, new.shape)):
            raise ValueError(f"{path} does not fit this network: {k} is {tuple(old.shape)}, here {tuple(new.shape)}")
        module, _, leaf = k.rpartition(".")
        idx = tuple(slice(0, n) for n in old.shape)
        if module in gdn:  # beta: 1 for new channels; gamma: 0.1 on the new diagonal, no cross terms
            t = torch.ones_like(new) if leaf == "beta" else 0.1 * torch.eye(new.shape[0], dtype=new.dtype)
        elif old.ndim == 1:  # a bias
            t = torch.zeros_like(new)
        else:  # a weight: new outputs fresh (scaled), new inputs read as zero
            i = 0 if k in transposed else 1  # the input dimension
            t = 0.1 * new.clone()
            grown_in = [slice(None)] * new.ndim
            grown_in[i] = slice(old.shape[i], None)
            t[tuple(grown_in)] = 0
            if grown_hf and k.startswith(("cc1.", "lrp1.")) and leaf == "weight":
                # these read cat([hyper features, decoded slices]): the new features sit between the two
                a, b = grown_hf
                t[:, a:b] = 0
                t[: old.shape[0], b : b + old.shape[1] - a] = old[:, a:]
                idx = (slice(0, old.shape[0]), slice(0, a), *idx[2:])
                old = old[:, :a]
        t[idx] = old
        out[k] = t
    return out


def _grown_hyper_features(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    """``(old, new)`` hyper features per latent position (``Hf``: ``hs2`` has ``4 * Hf`` outputs) when
    this network has more of them than the checkpoint, else ``None``."""
    if "hs2.weight" not in own or "hs2.weight" not in state:
        return None
    a, b = state["hs2.weight"].shape[0] // 4, own["hs2.weight"].shape[0] // 4
    return (a, b) if b > a else None
