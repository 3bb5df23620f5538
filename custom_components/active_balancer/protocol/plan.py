"""Plan the live reads of a Modbus variant: the fewest wire milliseconds.

Once a device's cell and sensor counts are known, only some registers of the
live block carry information. A read costs its bytes on the wire plus one
device turnaround; a gap between two needed registers is worth reading through
when its bytes cost less than a turnaround and a request of its own. The plan
is the cheapest set of contiguous reads that covers every needed register
(dynamic programming over the sorted registers), no read longer than the
device accepts (:func:`fallback_limit`, the one read-length rule of D2 and p81).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
import math

from .frames import MAX_READ_REGISTERS
from .registers import (
    PART_BALANCE_CURRENT,
    PART_BALANCING_CELLS,
    Block,
    LiveLayout,
    ModbusTable,
)

REQUEST_BYTES = 8
"""An FC03 request: address, function, start, count, CRC."""
REPLY_OVERHEAD = 5
"""An FC03 reply without its data: address, function, byte count, CRC."""
DEFAULT_TURNAROUND = 0.010
"""Turnaround assumed until the bus has measured the device's own."""
SILENT_CHARACTERS = 7
"""Modbus RTU needs 3.5 character times of silence before a request and
before its reply: no request costs less, whatever a loopback line measures."""

PART_LIVE = "live"
OPTIONAL_LIVE_PARTS = (PART_BALANCE_CURRENT, PART_BALANCING_CELLS)
"""Live registers that only add detail: a device may not have them."""


@dataclass(frozen=True, slots=True)
class Cost:
    """What one read costs on a line: bytes x byte time + a turnaround."""

    byte_time: float
    turnaround: float = DEFAULT_TURNAROUND

    def read(self, count: int) -> float:
        """Seconds one read of *count* registers takes, request to reply."""
        return (REQUEST_BYTES + REPLY_OVERHEAD + 2 * count) * self.byte_time + (
            self.turnaround
        )

    def plan(self, blocks: Iterable[Block]) -> float:
        """Seconds a whole plan takes."""
        return sum(self.read(block.count) for block in blocks)


def line_cost(byte_time: float, measured: float | None) -> Cost:
    """The cost model of a line: its byte time and the device's turnaround.

    *measured* is the bus's median turnaround (None before the first answer);
    it is never taken below the silence Modbus RTU requires.
    """
    turnaround = DEFAULT_TURNAROUND if measured is None else measured
    return Cost(byte_time, max(turnaround, SILENT_CHARACTERS * byte_time))


def fallback_limit(table: ModbusTable, current: int) -> int | None:
    """The read length to fall back to after a long read failed, or None.

    The rule for D2 and p81 alike: a read longer than the vendor app's own
    longest read (``table.fallback_max_read``) that gets no answer or is
    refused is tried again in reads no longer than the app's; a device that
    does not answer those either has nothing to fall back to.
    """
    if current > table.fallback_max_read:
        return table.fallback_max_read
    return None


def live_registers(
    live: LiveLayout, cells: int, sensors: int, parts: Iterable[str]
) -> dict[int, str]:
    """The registers a live read needs for this device, each with its part.

    *parts* are the optional parts wanted (those the device has not left
    unanswered); the required part is always in.
    """
    wanted = set(parts)
    needed: dict[int, str] = {}
    for register in range(live.cells, live.cells + cells):
        needed[register] = PART_LIVE
    for register in range(live.temperatures, live.temperatures + sensors):
        needed[register] = PART_LIVE
    for register in (
        live.pack_voltage,
        live.cell_count,
        live.temperature_count,
        live.balancing,
        *range(live.alarms, live.alarms + 4),
    ):
        needed[register] = PART_LIVE
    if PART_BALANCE_CURRENT in wanted:
        needed.setdefault(live.balance_current, PART_BALANCE_CURRENT)
    if live.balance_bits is not None and PART_BALANCING_CELLS in wanted:
        words = min(live.balance_bits_words, max(1, math.ceil(cells / 16)))
        for word in range(words):
            needed.setdefault(live.balance_bits + word, PART_BALANCING_CELLS)
    return needed


def best_plan(
    registers: Iterable[int],
    cost: Cost,
    max_count: int = MAX_READ_REGISTERS,
    avoid: Iterable[int] = (),
) -> tuple[Block, ...]:
    """The cheapest reads covering *registers*, none longer than *max_count*.

    No read spans a register of *avoid* (one the device does not answer).
    """
    regs = sorted(set(registers))
    if not regs:
        return ()
    avoided = frozenset(avoid)
    count = len(regs)
    best = [0.0] + [math.inf] * count
    start_of = [0] * (count + 1)
    for end in range(1, count + 1):
        last = regs[end - 1]
        for first in range(end - 1, -1, -1):
            span = last - regs[first] + 1
            if span > max_count:
                break
            if first < end - 1 and any(
                reg in avoided for reg in range(regs[first], regs[first + 1])
            ):
                break
            total = best[first] + cost.read(span)
            if total < best[end] - 1e-12:
                best[end] = total
                start_of[end] = first
    blocks: list[Block] = []
    end = count
    while end > 0:
        first = start_of[end]
        blocks.append(Block(regs[first], regs[end - 1] - regs[first] + 1))
        end = first
    return tuple(reversed(blocks))


def split(block: Block, max_count: int) -> tuple[Block, ...]:
    """*block* in consecutive reads of at most *max_count* registers."""
    return tuple(
        Block(start, min(max_count, block.start + block.count - start))
        for start in range(block.start, block.start + block.count, max_count)
    )


def parts_of(block: Block, needed: Mapping[int, str]) -> frozenset[str]:
    """The parts whose registers *block* reads."""
    return frozenset(part for reg, part in needed.items() if reg in block)


__all__ = [
    "DEFAULT_TURNAROUND",
    "OPTIONAL_LIVE_PARTS",
    "PART_BALANCE_CURRENT",
    "PART_BALANCING_CELLS",
    "PART_LIVE",
    "Cost",
    "best_plan",
    "fallback_limit",
    "line_cost",
    "live_registers",
    "parts_of",
    "split",
]


class LivePlan:
    """The live reads planned for one device, and what each register is for.

    Planned again when the device's counts change, when a long read fails
    (``max_read`` is lowered) and when an optional part goes unanswered or
    is tried again; the client does the reading.
    """

    def __init__(self) -> None:
        """Nothing planned yet."""
        self.max_read = MAX_READ_REGISTERS
        """Longest read the device answers (lowered by the fallback rule)."""
        self.blocks: tuple[Block, ...] = ()
        """The reads of one live poll."""
        self.needed: dict[int, str] = {}
        """Each planned register and the part it belongs to."""
        self.verified: set[str] = set()
        """Optional parts the device answered since they were planned in."""
        self.counts: tuple[int, int] | None = None
        """The (cells, sensors) planned for; None: the whole live block."""

    def reset(self) -> None:
        """Forget what was learnt (probing another variant)."""
        self.max_read = MAX_READ_REGISTERS
        self.verified.clear()
        self.counts = None

    def plan(
        self,
        table: ModbusTable,
        cost: Cost,
        unanswered: Container[str],
        counts: tuple[int, int] | None = None,
    ) -> None:
        """Plan the reads for *counts* (cells, sensors), or for the ones planned.

        Before any counts are known: the whole live block. Registers of the
        optional parts in *unanswered* are left out and read around.
        """
        if counts is not None:
            self.counts = counts
        live = table.live
        every = live_registers(live, live.max_cells, 0, OPTIONAL_LIVE_PARTS)
        avoid = frozenset(reg for reg, part in every.items() if part in unanswered)
        if self.counts is None:
            block = live.block
            self.needed = {
                register: every.get(register, PART_LIVE)
                for register in range(block.start, block.start + block.count)
                if register not in avoid
            }
            if not avoid:
                self.blocks = split(block, self.max_read)
                return
        else:
            parts = [part for part in OPTIONAL_LIVE_PARTS if part not in unanswered]
            self.needed = live_registers(live, *self.counts, parts)
        self.blocks = best_plan(self.needed, cost, self.max_read, avoid)

    def forget(self, block: Block) -> None:
        """Drop a failed optional read and its registers from the plan."""
        self.needed = {
            reg: part for reg, part in self.needed.items() if reg not in block
        }
        self.blocks = tuple(b for b in self.blocks if b != block)

    def parts(self, block: Block) -> frozenset[str]:
        """The parts *block* reads."""
        return parts_of(block, self.needed)
