"""Exceptions raised by the LayerQuantizer codecs."""


class CorruptChunkError(ValueError):
    """An encoded chunk is truncated, corrupted or not a LayerQuantizer chunk at all.

    A subclass of :class:`ValueError`, so code that guards numcodecs decoders with
    ``except ValueError`` keeps working.
    """
