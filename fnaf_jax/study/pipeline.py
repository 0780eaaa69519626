"""Cached, resumable stages with a progress line.

A study is a list of ``Stage``s run in order. Each stage has a config (JSON-able) and
the hashes of the stages it depends on; together they give its *key*. After a stage's
outputs are written, ``DIR/.stages/NAME.done`` records the key, so a re-run skips every
stage whose key is unchanged. A stage that was started but not finished (killed run) is
simply run again: the verbs it calls resume from their own checkpoints. The package
version is part of every key. A stage whose key changed has its output paths removed
first, so no verb resumes from state made with another config or version.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fnaf_jax import __version__
from fnaf_jax.errors import FnafError
from fnaf_jax.fileio import write_text

MARKER_DIR = ".stages"


class StageError(FnafError):
    """A stage failed; the message names it."""


@dataclass
class Stage:
    name: str
    run: Callable[[], None]            # does the work; raises on failure
    config: dict                       # everything that changes the outputs
    outputs: list[Path] = field(default_factory=list)  # removed when the key changes
    after: list[str] = field(default_factory=list)     # stages whose outputs it reads
    weight: float = 1.0                # prior seconds per unit of work (reference machine)
    kind: str = ""                     # stages of one kind share a measured rate (ETA)
    work: float = 1.0                  # units of work (slices x epochs, model calls ...)


RECENT_SHARE = 0.3  # the latest stages covering this share of the measured time set the load


def eta_seconds(remaining: list[Stage], measured: list[tuple[Stage, float]]) -> float | None:
    """Seconds the ``remaining`` stages should take, from the ``measured`` (stage, seconds)
    of this study, in order. Each stage's prior (``weight * work``: seconds on the reference
    machine) is scaled by the current load factor (actual / prior over the latest stages
    that cover ``RECENT_SHARE`` of the measured time, so a machine that gets busier or
    quieter is followed, and a few short stages dominated by compilation do not swing it)
    and by its kind's own factor (how much slower or faster than the average that kind
    ran so far: the priors' error for this model size). None before anything is measured."""
    timed = [(s, sec) for s, sec in measured if s.weight * s.work > 0]
    if not timed:
        return None

    def ratio(pairs):
        prior = sum(s.weight * s.work for s, _ in pairs)
        return sum(sec for _, sec in pairs) / prior

    total, recent, covered = sum(sec for _, sec in timed), [], 0.0
    for pair in reversed(timed):
        recent.append(pair)
        covered += pair[1]
        if covered >= RECENT_SHARE * total:
            break
    overall, load = ratio(timed), ratio(recent)
    kind_factor = {kind: ratio([p for p in timed if p[0].kind == kind]) / overall
                   for kind in {s.kind for s, _ in timed if s.kind}}
    return sum(s.weight * s.work * load * kind_factor.get(s.kind, 1.0) for s in remaining)


def marker_seconds(marker: Path) -> float | None:
    """The ``seconds`` a done-marker records; None when it cannot be read."""
    try:
        return float(json.loads(marker.read_text())["seconds"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def stage_timings(out_dir) -> dict[str, float]:
    """{stage: seconds} from the done-markers of a study folder."""
    found = {m.stem: marker_seconds(m) for m in sorted((Path(out_dir) / MARKER_DIR).glob("*.done"))}
    return {name: sec for name, sec in found.items() if sec is not None}


def config_hash(obj) -> str:
    """Stable short hash of a JSON-able object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fmt(seconds: float) -> str:
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Pipeline:
    """Runs stages under ``out_dir``, writing markers and a log (``out_dir/reproduce.log``)."""

    def __init__(self, out_dir, stages: list[Stage], log: Callable[[str], None] | None = None):
        self.out_dir = Path(out_dir)
        self.stages = stages
        self.marker_dir = self.out_dir / MARKER_DIR
        self.log_file = self.out_dir / "reproduce.log"
        self._echo = log or print
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate stage names: {names}")
        self.keys = self._keys()

    def _keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for stage in self.stages:
            missing = [a for a in stage.after if a not in keys]
            if missing:
                raise ValueError(f"stage {stage.name} depends on {missing}, which do not run before it")
            # the package version is part of the key: a new release recomputes everything
            keys[stage.name] = config_hash({"config": stage.config, "version": __version__,
                                            "after": {a: keys[a] for a in stage.after}})
        return keys

    def log(self, message: str) -> None:
        self._echo(message)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def marker(self, name: str, kind: str = "done") -> Path:
        return self.marker_dir / f"{name}.{kind}"

    def is_done(self, stage: Stage) -> bool:
        path = self.marker(stage.name)
        if not path.is_file():
            return False
        try:
            return json.loads(path.read_text()).get("key") == self.keys[stage.name]
        except json.JSONDecodeError:
            return False

    def seconds(self, stage: Stage) -> float | None:
        """How long a done stage took (from its marker)."""
        return marker_seconds(self.marker(stage.name))

    def _prepare(self, stage: Stage) -> None:
        """Clear outputs made under another key; record the key this attempt runs under."""
        key = self.keys[stage.name]
        started = self.marker(stage.name, "started")
        old_key = None
        for path in (self.marker(stage.name), started):
            if path.is_file():
                try:
                    old_key = json.loads(path.read_text()).get("key")
                except json.JSONDecodeError:
                    old_key = "corrupt"
                break
        if old_key is not None and old_key != key:
            self.log(f"  {stage.name}: config changed ({old_key} -> {key}); removing its old outputs")
            for out in stage.outputs:
                out = Path(out)
                if out.is_dir():
                    shutil.rmtree(out)
                elif out.exists():
                    out.unlink()
        self.marker(stage.name).unlink(missing_ok=True)
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        write_text(started, json.dumps({"key": key, "config": stage.config}, default=str))

    def needed(self, targets) -> list[Stage]:
        """The stages in ``targets`` and every stage they depend on, in order."""
        by_name = {s.name: s for s in self.stages}
        unknown = [t for t in targets if t not in by_name]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages: {list(by_name)}")
        want, todo = set(), list(targets)
        while todo:
            name = todo.pop()
            if name not in want:
                want.add(name)
                todo += by_name[name].after
        return [s for s in self.stages if s.name in want]

    def run(self, targets=None) -> dict[str, str]:
        """Run every stage not done (only ``targets`` and what they need, when given);
        returns {stage: "skipped" | "ran"}."""
        stages = self.stages if targets is None else self.needed(targets)
        n = len(stages)
        t0 = time.monotonic()
        status: dict[str, str] = {}
        measured = [(s, sec) for s in stages if self.is_done(s) and (sec := self.seconds(s)) is not None]
        for i, stage in enumerate(stages, start=1):
            if self.is_done(stage):
                self.log(f"[stage {i}/{n}] {stage.name}: skipped (done, key {self.keys[stage.name]})")
                status[stage.name] = "skipped"
                continue
            elapsed = time.monotonic() - t0
            eta = eta_seconds([s for s in stages[i - 1:] if not self.is_done(s)], measured)
            eta_text = "?" if eta is None else _fmt(eta)
            self.log(f"[stage {i}/{n}] {stage.name}: running | elapsed {_fmt(elapsed)} | ETA {eta_text}")
            self._prepare(stage)
            start = time.monotonic()
            try:
                stage.run()
            except KeyboardInterrupt:
                self.log(f"[stage {i}/{n}] {stage.name}: interrupted; re-run to resume")
                raise
            except Exception as exc:
                self.log(f"[stage {i}/{n}] {stage.name}: FAILED: {type(exc).__name__}: {exc}")
                raise StageError(f"stage {i}/{n} '{stage.name}' failed: {exc} "
                                 f"(log: {self.log_file}; fix and re-run to resume)") from exc
            seconds = time.monotonic() - start
            write_text(self.marker(stage.name), json.dumps(
                {"key": self.keys[stage.name], "seconds": round(seconds, 3),
                 "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "config": stage.config},
                indent=1, default=str))
            self.marker(stage.name, "started").unlink(missing_ok=True)
            status[stage.name] = "ran"
            measured.append((stage, seconds))
            self.log(f"[stage {i}/{n}] {stage.name}: done in {_fmt(seconds)} | "
                     f"elapsed {_fmt(time.monotonic() - t0)}")
        self.log(f"all {n} stages done in {_fmt(time.monotonic() - t0)} "
                 f"({sum(v == 'ran' for v in status.values())} ran, "
                 f"{sum(v == 'skipped' for v in status.values())} skipped)")
        return status
