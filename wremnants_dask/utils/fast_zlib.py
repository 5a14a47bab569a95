"""Faster ZLIB for uproot, with Intel ISA-L (``isal``) when installed: reads and writes.

The synthetic samples and the real NanoAOD files in ``../shared`` are ZLIB-compressed, and
inflating their baskets is the largest single cost of a W-mass chunk (about a third with the
standard library's zlib; LZMA or ZSTD files are not affected). ISA-L inflates the same
streams to the same bytes, faster: reading the ``mw`` columns takes 0.69x the time, the whole
``mw`` run 0.81x (``bench/bench_zlib.py``). uproot can use it, but its documented switch
(``uproot.ZLIB.library``) sets the attribute on the compression class, not on the decompressor
object that reads baskets (uproot 5.7), so the switch here is set on that object.

Compressing is where zlib is slowest: at level 1 it was over half of the generator's time.
``zlib_compression`` gives a ``uproot.ZLIB`` that deflates with ISA-L at its level 1: a W
sample generates 2.2x faster, its file is 11% larger, and it reads as fast. uproot's own
``"isal"`` option would map our level 1 to ISA-L level 0, which stores the data almost
uncompressed, hence the small subclass.
"""

from __future__ import annotations

from typing import Any

import uproot
import uproot.compression


def _isal_zlib() -> Any:
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib


def use_isal_decompression() -> str:
    """Make uproot inflate ZLIB baskets with ISA-L if it is importable; returns the library
    in use (``"isal"`` or ``"zlib"``). Safe to call more than once, in any process."""
    decompressor = getattr(uproot.compression, "_decompress_ZLIB", None)
    if decompressor is None or not hasattr(decompressor, "library"):
        return "zlib"  # an uproot without the switch: its own default
    if _isal_zlib() is None:
        return decompressor.library
    decompressor.library = "isal"
    return "isal"


class IsalZLIB(uproot.ZLIB):
    """``uproot.ZLIB(level)`` (as recorded in the file) deflated by ISA-L at the nearest of its
    levels 1-3: standard ZLIB streams that any ROOT reader inflates."""

    @property
    def code_pair(self) -> tuple[int, int]:  # uproot matches the exact class: say "ZLIB"
        return uproot.const.kZLIB, self.level

    def compress(self, data: bytes) -> bytes:
        return _isal_zlib().compress(data, level=min(3, (self.level + 2) // 3))


def zlib_compression(level: int = 1) -> uproot.ZLIB:
    """The ZLIB compression for files we write: ISA-L when importable, else zlib."""
    if level > 0 and _isal_zlib() is not None:
        return IsalZLIB(level)
    return uproot.ZLIB(level)
