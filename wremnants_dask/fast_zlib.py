"""Faster ZLIB decompression for uproot reads, with Intel ISA-L (``isal``) when installed.

The synthetic samples and the real NanoAOD files in ``../shared`` are ZLIB-compressed, and
inflating their baskets is the largest single cost of a W-mass chunk (about a third with the
standard library's zlib; LZMA or ZSTD files are not affected). ISA-L inflates the same
streams to the same bytes, faster: reading the ``mw`` columns takes 0.69x the time, the whole
``mw`` run 0.81x (``bench/bench_decompress.py``). uproot can use it, but its documented switch
(``uproot.ZLIB.library``) sets the attribute on the compression class, not on the decompressor
object that reads baskets (uproot 5.7), so the switch here is set on that object. Compression
(the generator's writes) is left alone, so written files stay byte-identical.
"""

from __future__ import annotations

import uproot.compression


def use_isal_decompression() -> str:
    """Make uproot inflate ZLIB baskets with ISA-L if it is importable; returns the library
    in use (``"isal"`` or ``"zlib"``). Safe to call more than once, in any process."""
    decompressor = getattr(uproot.compression, "_decompress_ZLIB", None)
    if decompressor is None or not hasattr(decompressor, "library"):
        return "zlib"  # an uproot without the switch: its own default
    try:
        from isal import isal_zlib  # noqa: F401
    except ImportError:
        return decompressor.library
    decompressor.library = "isal"
    return "isal"
