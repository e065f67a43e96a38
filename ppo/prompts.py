"""Prompt and text sets, and the data cursor that walks through them reproducibly.

Formats: `.jsonl` (one JSON object per line with a string field, "prompt" for prompts, "text"
for ptx data), `.txt` (one item per non-empty line), or `builtin` (ppo/data/*.jsonl, shipped
with the package). A broken line raises DataError naming the file and the line number.

The cursor is one integer (items consumed so far). The order is a fresh permutation per epoch
seeded by (seed, epoch), so the cursor alone restores the exact position after a resume, and
`skip(k)` (used by rollbacks to skip a bad stretch of data) is just `cursor += k * batch`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

BUILTIN_DIR = Path(__file__).parent / "data"


class DataError(ValueError):
    """An unreadable prompt/text file; the message names the file and line."""


def load_texts(spec: str, *, field: str = "prompt", builtin_name: str = "prompts.jsonl") -> list[str]:
    """Load prompts (or ptx texts with field='text') from `spec` (see the module docstring)."""
    path = BUILTIN_DIR / builtin_name if spec == "builtin" else Path(spec)
    if not path.is_file():
        raise DataError(f"{path}: no such file (give a .jsonl with a {field!r} field, a .txt, or 'builtin')")
    items: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    is_jsonl = path.suffix in (".jsonl", ".json")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if not is_jsonl:
            items.append(line)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise DataError(f"{path}:{lineno}: expected an object with a string {field!r} field")
        if not obj[field].strip():
            raise DataError(f"{path}:{lineno}: {field!r} is empty")
        items.append(obj[field])
    if not items:
        raise DataError(f"{path}: no items found (expected one {field!r} per line)")
    return items


class DataCursor:
    """Reproducible infinite walk over `items`: epoch e visits them in permutation(seed, e).

    With torch.distributed, every rank holds the same cursor and takes its own slice of each
    global batch (`rank::world`), so ranks never see the same prompt in one step.
    """

    def __init__(self, items: list[str], seed: int, rank: int = 0, world: int = 1):
        self.items = items
        self.seed = seed
        self.rank = rank
        self.world = world
        self.position = 0  # items consumed, globally
        self._perm_epoch = -1
        self._perm: list[int] = []

    def _order(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.items), generator=g).tolist()
            self._perm_epoch = epoch
        return self._perm

    def _item(self, index: int) -> str:
        epoch, offset = divmod(index, len(self.items))
        return self.items[self._order(epoch)[offset]]

    def next_batch(self, batch_size: int) -> list[str]:
        """The next `batch_size` items for this rank; advances by batch_size * world."""
        start = self.position
        self.position += batch_size * self.world
        return [self._item(start + i * self.world + self.rank) for i in range(batch_size)]

    def skip(self, batches: int, batch_size: int) -> None:
        self.position += batches * batch_size * self.world

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "size": len(self.items)}

    def load_state_dict(self, d: dict) -> None:
        if d.get("size") not in (None, len(self.items)):
            raise DataError(f"checkpoint data cursor was for {d['size']} items, this run has {len(self.items)}:"
                            " resume with the same prompts file")
        self.position = int(d["position"])
