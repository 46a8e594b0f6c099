"""Where each event lives in the journal: a compact in-memory index from event seq to record.

Contract: ``add(first_event_seq, offset)`` is called once per journal record, in order;
``locate(seq)`` returns the offset of the record holding event ``seq`` (or the first record after
it). Two ``array('q')`` columns keep the index at 16 bytes per batch record.
"""
from __future__ import annotations

from array import array
from bisect import bisect_right


class HistoryIndex:
    __slots__ = ("_seqs", "_offsets", "start_offset")

    def __init__(self, start_offset: int) -> None:
        self._seqs = array("q")
        self._offsets = array("q")
        self.start_offset = start_offset   # offset of the first record in the file

    def add(self, first_event_seq: int, offset: int) -> None:
        self._seqs.append(first_event_seq)
        self._offsets.append(offset)

    def locate(self, seq: int) -> int:
        i = bisect_right(self._seqs, seq) - 1
        if i < 0:
            return self._offsets[0] if self._offsets else self.start_offset
        return self._offsets[i]

    def __len__(self) -> int:
        return len(self._seqs)
