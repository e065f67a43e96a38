"""TensorBoard event files (one file, or a log directory: every run under it), read with the
`tensorboard` package's EventMultiplexer / EventAccumulator: no protobuf is parsed here.

Scalars come from `add_scalar` (torch SummaryWriter, tensorboardX: simple_value) or from
TF2-style scalar tensors. All tags of one step become one event; its time is the latest wall
time among them. Which name table applies is guessed from the tags (base.guess_trainer):
verl logs its own keys (`actor/ppo_kl`), OpenRLHF `train/<key>`, transformers' callback
`train/<key>` and `eval/<key>` (mapped back to `<key>` and `eval_<key>` for the trl table).
Two runs under one directory that log the same tag are refused: they are different runs,
and mixing them would be wrong; pass the run's own directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rlguard.orchestrator.logformats.base import (
    Format,
    LogFormatError,
    Record,
    guess_trainer,
    merge,
    transformers_rename,
)
from rlguard.orchestrator.logformats.sources import SnapshotSource


def _is_event_file(p: Path) -> bool:
    return p.is_file() and "tfevents" in p.name


def sniff(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return any(_is_event_file(p) for p in path.rglob("*tfevents*"))
    return "tfevents" in path.name


def _scalars(acc) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, wall_time, value)] of one accumulator, scalars and scalar tensors."""
    from tensorboard.util import tensor_util

    out: dict[str, list] = {}
    tags = acc.Tags()
    for tag in tags.get("scalars", []):
        out[tag] = [(e.step, e.wall_time, float(e.value)) for e in acc.Scalars(tag)]
    for tag in tags.get("tensors", []):
        rows = []
        for e in acc.Tensors(tag):
            arr = tensor_util.make_ndarray(e.tensor_proto)
            if arr.size == 1 and arr.dtype.kind in "fiu":
                rows.append((e.step, e.wall_time, float(arr.reshape(-1)[0])))
        if rows:
            out[tag] = rows
    return out


class Loader:
    """Loads the scalars of `path`; kept by a tailing source, so that each reload reads only
    what was appended since (the accumulators keep their file positions)."""

    def __init__(self):
        self.acc = None
        self.mux = None

    def __call__(self, path: Path):
        try:
            from tensorboard.backend.event_processing import event_accumulator, event_multiplexer
        except ImportError:
            raise LogFormatError("reading TensorBoard files needs the `tensorboard` package: pip install tensorboard") \
                from None
        logging.getLogger("tensorboard").setLevel(logging.ERROR)
        guidance = {event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 1,
                    event_accumulator.AUDIO: 1, event_accumulator.HISTOGRAMS: 1,
                    event_accumulator.COMPRESSED_HISTOGRAMS: 1}
        if path.is_file():
            if self.acc is None:
                self.acc = event_accumulator.EventAccumulator(str(path), size_guidance=guidance)
            self.acc.Reload()
            runs = {path.name: _scalars(self.acc)}
        else:
            if self.mux is None:
                self.mux = event_multiplexer.EventMultiplexer(size_guidance=guidance)
            self.mux.AddRunsFromDirectory(str(path))  # picks up runs that appeared since
            self.mux.Reload()
            runs = {run: _scalars(self.mux.GetAccumulator(run)) for run in sorted(self.mux.Runs())}
        return _events(path, runs)


def _events(path: Path, runs: dict):
    owner: dict[str, str] = {}
    by_step: dict[int, Record] = {}
    for run, tags in runs.items():
        for tag, rows in tags.items():
            if tag in owner:
                raise LogFormatError(f"{path}: runs {owner[tag]!r} and {run!r} both log {tag!r}: these are "
                                     f"different runs; pass one run's directory")
            owner[tag] = run
            for step, wall, value in rows:
                rec = by_step.setdefault(step, Record(step, {}, wall))
                rec.values[tag] = value
                rec.time = max(rec.time, wall)
    if not by_step:
        raise LogFormatError(f"{path}: TensorBoard files with no scalar values")
    trainer = guess_trainer(owner)
    rename = transformers_rename if trainer == "trl" else None
    return merge([by_step[s] for s in sorted(by_step)], trainer, rename)


def load(path: Path):
    return Loader()(path)


def open_source(path: Path, **_) -> SnapshotSource:
    return SnapshotSource(path, Loader(), "tensorboard")


FORMAT = Format("tensorboard", "TensorBoard event files (events.out.tfevents.*), a file or a log directory",
                sniff, open_source)
