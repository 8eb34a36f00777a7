"""Phases that place the model for smaller cards: memory modes, a 24 GB card, a 16 GB card (streamed, then with the
int8 text encoder placed whole), and host offload under a cap."""

from __future__ import annotations

import time
from typing import Any

from backend.model.plan import GIB


class CardPhases:
    """Mixed into the runner's Bench: uses its job(), _place(), cap(), record() and peak figures."""

    def phase_modes(self) -> None:
        """The same few steps all on the GPU, with model offload and with group offload (under --small-card-gib)."""
        steps = self.args.steps
        self.job("modes", "best", steps, prompt="a poster")
        if not self.cuda:
            return
        self._place("model_offload")
        self.job("modes", "best", steps, prompt="a poster")
        if self.time_left() > 90:
            self._place("group_offload")
            self.cap(self.args.small_card_gib)
            try:
                self.job("modes", "best", steps, prompt="a poster", vram_cap_gib=self.args.small_card_gib)
            finally:
                self.cap(None)
        self._place("gpu")

    def phase_card24(self) -> None:
        """A 24 GB card (FP8 transformer after the fp8 phase) under a 24 GiB cap, Fast with its caption: host offload
        twice (the first job after placing, then one more), then diffusers' model offload once."""
        if not self.cuda and self.args.arch == "full":
            self.record({"phase": "card24", "skipped": "no GPU"})
            return
        self._place("host_offload")  # on the CPU (tiny arch): the code path, the CPU standing in for the GPU
        host_gib = round(self.engine.offload.weight_bytes() / GIB, 1)
        self.cap(24)
        try:
            self.job("card24", "fast", vram_cap_gib=24, place_s=round(self.place_seconds, 1), host_gib=host_gib)
            self.job("card24", "fast", vram_cap_gib=24)
        finally:
            self.cap(None)
        if self.cuda and self.time_left() > 60:
            self._place("model_offload")
            self.cap(24)
            try:
                self.job("card24", "fast", vram_cap_gib=24)
            finally:
                self.cap(None)

    def phase_card16(self) -> None:
        """A 16 GB card under a 16 GiB cap: group offload with streams, a few steps, then a short caption timed with
        the bf16 text encoder streamed; then the int8 text encoder placed whole (for good): the same caption, and
        Fast with its caption."""
        if not self.cuda and self.args.arch == "full":
            self.record({"phase": "card16", "skipped": "no GPU"})
            return
        if self.fp8:
            self.record({"phase": "card16", "skipped": "FP8 cannot be streamed"})
            return
        self._place("group_offload")
        self.cap(self.args.small_card_gib)
        try:
            self.job("card16", "best", self.args.steps, prompt="a poster", vram_cap_gib=self.args.small_card_gib)
            if self.time_left() > 40:
                self._caption_probe("card16-caption")
        finally:
            self.cap(None)
        if self.time_left() >= 40:
            self.phase_card16int8()

    def phase_card16int8(self) -> None:
        """The 16 GB card's int8 text encoder alone (card16 without its bf16 part): group offload under a 16 GiB cap,
        the text encoder in int8 placed whole (for good); a short caption, then Fast end to end."""
        if not self.cuda and self.args.arch == "full":
            self.record({"phase": "card16int8", "skipped": "no GPU"})
            return
        self._place("group_offload", text_encoder_int8=True)
        self.record({"phase": "card16-int8-text-encoder", "place_s": round(self.place_seconds, 1),
                     "pin_streamed": self.args.pin_streamed})
        self.cap(self.args.small_card_gib)
        try:
            self._caption_probe("card16-int8-caption")
            if self.time_left() > 45:
                self.job("card16-int8", "fast", vram_cap_gib=self.args.small_card_gib)
        finally:
            self.cap(None)

    def _caption_probe(self, label: str) -> None:
        """The automatic caption alone, --caption-probe-tokens long (random weights never end it early)."""
        from PIL import Image

        from backend.core.job import JobParams

        tokens = self.args.caption_probe_tokens
        self.engine._captions.clear()
        self.peak_reset()
        t = time.monotonic()
        caption = self.engine._caption(Image.fromarray(self.image, "RGBA"),
                                       JobParams.parse({"resolution": self.args.resolution}), tokens, lambda: False)
        seconds = time.monotonic() - t
        self.record({"phase": label, "mode": self.engine.memory.mode.value,
                     "text_encoder_int8": self.engine.memory.text_encoder_int8, "max_new_tokens": tokens,
                     "caption_words": len(caption.split()), "seconds": round(seconds, 2),
                     "s_per_token": round(seconds / tokens, 3), "peak_vram_gib": self.peak_gib(),
                     "vram_cap_gib": self.args.small_card_gib})

    def _offloaded_jobs(self, label: str, card: int, text_encoder_int8: bool = False, **extra: Any) -> None:
        """Host offload under a `card` GiB cap, where the budget leaves time: the first Fast after placing, then one
        more; back to all on the GPU after."""
        if self.time_left() <= 60:
            return
        self._place("host_offload", text_encoder_int8=text_encoder_int8)
        host_gib = round(self.engine.offload.weight_bytes() / GIB, 1)
        self.cap(card)
        try:
            self.job(label, "fast", vram_cap_gib=card, place_s=round(self.place_seconds, 1), host_gib=host_gib, **extra)
            if self.time_left() > 40:
                self.job(label, "fast", vram_cap_gib=card, **extra)
        finally:
            self.cap(None)
        self._place("gpu")
