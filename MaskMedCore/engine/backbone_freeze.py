"""Freeze a pretrained encoder and decoder for the first iterations of a run (``--freeze-backbone-iterations``).

A new decoupled head (and bridge) starts from random weights on top of a trained UNet; its first
gradients are large and would push the pretrained features around before the head has learnt
anything. Freezing the UNet for the first N iterations lets the head learn on fixed features, then
everything trains together (the usual linear-probe-then-fine-tune schedule).

How, and why this way:

- ``requires_grad`` is switched off on the encoder's and decoder's parameters: autograd then computes
  no gradient for them (a frozen step is cheaper), their ``.grad`` stays ``None``, and SGD and AdamW
  skip parameters without a gradient entirely, so neither momentum nor weight decay moves them. The
  network has no running statistics (instance norm without tracking), so nothing else changes.
- The optimiser holds every parameter from the start: its state dict has the same layout before and
  after the switch, so a run resumed mid-way (frozen or not) loads it as saved, and the poly LR
  schedule is one schedule over the whole run.
- The state is a function of the iteration count only (:meth:`BackboneFreeze.update`), so a resumed run
  freezes exactly when the uninterrupted run would have.
- Under DDP the wrapper only synchronises parameters that required gradients when it was built; the
  trainer builds it again when :meth:`update` reports a change.
"""

from __future__ import annotations

from torch import nn


class BackboneFreeze:
    """Args:
    model: the MaskMed network (``encoder`` and ``decoder`` attributes).
    iterations: freeze while fewer than this many iterations are done (0: never).
    """

    def __init__(self, model: nn.Module, iterations: int) -> None:
        self.params = [p for module in (model.encoder, model.decoder) for p in module.parameters()]
        self.iterations = iterations
        self.frozen = False

    def update(self, iteration: int) -> bool:
        """Freeze or unfreeze for the next step, which follows ``iteration`` finished iterations.

        Returns:
            True when the state changed (the caller rebuilds a DDP wrapper).
        """
        frozen = iteration < self.iterations
        if frozen == self.frozen:
            return False
        for p in self.params:
            p.requires_grad_(not frozen)
        self.frozen = frozen
        return True
