"""The evaluation decoders, fastest first: one entry each, holding what differs between them
(the engine or transformers' generate, a static cache, a CUDA graph) and the decoder that runs
instead when its first-use check fails (models.first_use). The code that decodes asks the entry
of the decoder picked (evaluation.decode, models.selfcheck) and never its name.

A decoder is one `DECODER_TABLE.register(name, Decoder(...))`; models.first_use picks among
them and models.selfcheck checks each against transformers' generate.
"""

from __future__ import annotations

from dataclasses import dataclass

from mathtune.core.kinds import KindTable


@dataclass(frozen=True)
class Decoder:
    description: str
    fallback: str | None = None  # what runs when its check fails on this device (None: the reference itself)
    engine: bool = True  # mathtune's engine (shared prefix, refilled batch); else transformers' batched generate
    static_cache: bool = False  # fixed slots refilled in place
    cuda_graph: bool = False  # one CUDA graph per step: a CUDA GPU only


DECODER_TABLE: KindTable[Decoder] = KindTable("decoder")

DECODER_TABLE.register("fixed_slots_cuda_graph", Decoder(
    "mathtune engine: shared prefix, fixed slots refilled in place, one CUDA graph per step",
    fallback="dynamic_cache", static_cache=True, cuda_graph=True))
DECODER_TABLE.register("fixed_slots", Decoder(
    "mathtune engine: shared prefix, fixed slots refilled in place, uncaptured", fallback="dynamic_cache",
    static_cache=True))
DECODER_TABLE.register("dynamic_cache", Decoder(
    "mathtune engine: shared prefix, dynamic cache, refilled batch", fallback="generate"))
DECODER_TABLE.register("generate", Decoder("transformers generate, batched", engine=False))
