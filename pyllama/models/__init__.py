"""Architecture registry: GGUF `general.architecture` -> model class."""

from __future__ import annotations

from pyllama.models.base import Batch, DecoderModel, SeqChunk
from pyllama.models.llama import LlamaModel

ARCHITECTURES: dict[str, type[DecoderModel]] = {
    "llama": LlamaModel,
}

__all__ = ["ARCHITECTURES", "Batch", "DecoderModel", "LlamaModel", "SeqChunk"]
