"""What a run has read and spent, summed over the clips actually trained on.

Under buckets (several clip shapes in a run) a sample's tokens and training FLOPs depend on its
shape (attention quadratic in its tokens), so the totals are sums over the batches read, each at the
costs measured for its own shape, not samples x the costs of one shape: C and D stay exact.
"""

from __future__ import annotations

from typing import Any

from lit_vdit.flops import six_nd


class Accounting:
    """Cumulative samples, tokens and FLOPs read by all processes (a checkpoint keeps them)."""

    COUNTERS = ("samples_seen", "samples_encoded", "tokens_seen", "flops_measured", "flops_vae_encode")

    def __init__(self) -> None:
        self.samples_seen = 0
        self.samples_encoded = 0  # clips the VAE encoded on the fly (not read from a latent cache)
        self.tokens_seen = 0
        self.flops_measured = 0  # the denoiser's training FLOPs, measured per clip shape
        self.flops_vae_encode = 0
        self.last_flops = 0  # the latest batch's denoiser training and VAE encoding FLOPs (throughput)
        # The checkpoint this run first resumed from: (its step, the FLOPs spent up to it). A cooldown
        # branch starts from its trunk's, whose FLOPs it shares (exact under any mix of clip shapes).
        self.started_from: dict[str, int] | None = None

    def add(self, samples: int, costs: dict[str, Any], encoded: bool) -> None:
        """``samples`` clips (of all processes) of one shape, whose costs are ``costs``
        (:meth:`DiffusionModule.describe` of that shape); ``encoded``: the VAE encoded them now."""
        vae_flops = samples * costs["vae_encode_flops"] if encoded else 0
        tokens, flops = samples * costs["tokens_per_sample"], samples * costs["flops_train_step"]
        self.add_totals(samples, tokens, flops, vae_flops, samples if encoded else 0)

    def add_totals(self, samples: int, tokens: int, flops: int, vae_flops: int, encoded: int) -> None:
        """Clips summed already (of several shapes: a pack on every process), ``encoded`` of them by
        the VAE now."""
        self.samples_seen += samples
        self.samples_encoded += encoded
        self.tokens_seen += tokens
        self.flops_measured += flops
        self.flops_vae_encode += vae_flops
        self.last_flops = flops + vae_flops

    def values(self, costs: dict[str, Any], captions_encoded: int) -> dict[str, float]:
        """The accounting columns: the denoiser's FLOPs (measured and 6ND) and, apart, the VAE's
        encoding and the text encoder's (forward for a frozen one, forward + backward when trained)."""
        per_caption = costs.get("text_encoder_flops_train") or costs.get("text_encoder_flops", 0)
        return {
            "samples_seen": float(self.samples_seen),
            "tokens_seen": float(self.tokens_seen),
            "flops_measured": float(self.flops_measured),
            "flops_6nd": six_nd(costs["params_non_embedding"], self.tokens_seen),
            "flops_vae_encode": float(self.flops_vae_encode),
            "flops_text_encoder": float(captions_encoded * per_caption),
        }

    def state_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in self.COUNTERS}, "started_from": self.started_from}

    def load_state_dict(self, state: dict[str, Any], costs: dict[str, Any], step: int) -> None:
        """Resume the counters of a checkpoint of ``step``; one from before per-shape accounting held
        samples only, all of the run's one shape (``costs``)."""
        self.samples_seen = int(state.get("samples_seen", 0))
        self.samples_encoded = int(state.get("samples_encoded", 0))
        self.tokens_seen = int(
            state.get("tokens_seen", self.samples_seen * costs.get("tokens_per_sample", 0))
        )
        self.flops_measured = int(
            state.get("flops_measured", self.samples_seen * costs.get("flops_train_step", 0))
        )
        self.flops_vae_encode = int(
            state.get("flops_vae_encode", self.samples_encoded * costs.get("vae_encode_flops", 0))
        )
        self.started_from = state.get("started_from") or {"step": step, "flops_measured": self.flops_measured}
