"""`wastesort-train review`: turn collected crops into labels a person has checked, over SSH.

Why this shape: an industrial PC has no desktop, but `scp` (or any image viewer on a laptop)
shows a PNG, and every shell can edit a text file or `mv` a file. So review writes

  OUT/images/<predicted class>/<item>.jpg   the ImageFolder that fine-tuning reads
  OUT/sheets/<class>-<page>.png            contact sheets: every crop with its number
  OUT/corrections.txt                      what the person writes (see CORRECTIONS_HELP)
  OUT/labels.json                          per image: predicted label, label, confirmed or not

and `review --apply` moves the files the corrections name, notices files moved by hand,
and records which labels a person confirmed. Item numbers stay the same across runs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .data import DataError

CORRECTIONS_HELP = """\
# Corrections for the crops in sheets/*.png (each tile shows #number, confidence).
# One instruction per line; '#' starts a comment. Then: wastesort-train review {src} --out {out} --apply
#   12 plastic        item 12 is plastic (any known class, or one named with --new-class)
#   12 13 40 metal    several items at once
#   12 drop           not a usable crop (two items, empty belt, cut off): leave it out
#   ok glass          every item now in images/glass/ is right (confirmed)
#   ok 7 8 9          these items are right
#   ok all            every item is right
# Moving a file by hand (mv images/glass/x.jpg images/metal/) relabels and confirms it too.
"""
TILE = 128
COLUMNS = 8
ROWS = 6
DROPPED = "dropped"


@dataclass
class Entry:
    """One crop under review."""

    number: int
    file: str  # relative to OUT/images (or OUT/dropped)
    predicted: str
    confidence: float
    source: str  # the collected JPEG
    label: str | None  # None: dropped
    confirmed: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("collected", type=Path, help="the [collect] directory (or a copy of it)")
    p.add_argument("--out", type=Path, required=True, help="review folder: images/, sheets/, corrections.txt, labels.json")
    p.add_argument("--apply", action="store_true", help="apply OUT/corrections.txt and files moved by hand")
    p.add_argument("--new-class", action="append", default=[], metavar="NAME",
                   help="allow this class, which the model does not know yet (e.g. textile); repeatable")


def run(args: argparse.Namespace) -> dict[str, Any]:
    review = Review(args.out, new_classes=args.new_class)
    review.add_collected(args.collected)
    if args.apply:
        review.apply_corrections()
    review.save()
    return review.summary()


def _sidecars(collected: Path) -> list[Path]:
    if not collected.is_dir():
        raise DataError(f"collected folder not found: {collected}")
    found = sorted(collected.rglob("*.json"))
    if not found:
        raise DataError(f"{collected} holds no collected items (expected <day>/<item>.json + .jpg from the daemon's "
                        f"[collect] section; is collect.enabled = true and has the line run?)")
    return found


def _valid_class_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "_-" for c in name) and name not in ("ok", "drop", "all")


class Review:
    """The review folder and its bookkeeping (labels.json)."""

    def __init__(self, out: Path, new_classes: list[str] | None = None) -> None:
        self.out = out
        self.images = out / "images"
        bad = [c for c in new_classes or [] if not _valid_class_name(c)]
        if bad:
            raise DataError(f"--new-class {bad[0]!r}: a class name is letters, digits, '_' or '-'")
        self.new_classes = list(new_classes or [])
        self.entries: dict[int, Entry] = {}
        self.model_classes: list[str] = []
        self.applied = 0
        self.added = 0
        state = out / "labels.json"
        if state.is_file():
            d = json.loads(state.read_text())
            self.model_classes = list(d.get("model_classes", []))
            self.new_classes = sorted(set(self.new_classes) | set(d.get("new_classes", [])))
            self.entries = {int(e["number"]): Entry(**e) for e in d["images"]}

    @property
    def known_classes(self) -> list[str]:
        return list(dict.fromkeys(self.model_classes + self.new_classes))

    # --- collecting ---------------------------------------------------------------------------
    def add_collected(self, collected: Path) -> None:
        """Copy crops not yet under review into images/<predicted>/, numbered after the existing ones."""
        by_source = {e.source for e in self.entries.values()}
        number = max(self.entries, default=0)
        for sidecar in _sidecars(collected):
            try:
                meta = json.loads(sidecar.read_text())
                names, label = list(meta["crops"]), str(meta["label"])
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{sidecar} is not a collected item's sidecar: {e}") from None
            for cls in meta.get("scores", {}):
                if cls not in self.model_classes:
                    self.model_classes.append(cls)
            for name in names:
                src = sidecar.parent / name
                if str(src) in by_source or not src.is_file():
                    continue
                number += 1
                rel = f"{label}/{src.name}"
                (self.images / label).mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, self.images / rel)
                self.entries[number] = Entry(number, rel, label, float(meta.get("confidence", 0.0)), str(src), label)
                self.added += 1
        if not self.entries:
            raise DataError(f"{collected} has sidecars but none of their crops (JPEG files) are there")

    # --- corrections --------------------------------------------------------------------------
    def apply_corrections(self) -> None:
        """Files moved by hand first, then corrections.txt; every line is checked before any file moves."""
        self._pick_up_moves()
        path = self.out / "corrections.txt"
        actions = self._parse(path.read_text()) if path.is_file() else []
        for kind, numbers, arg in actions:
            if numbers == ["all"]:
                targets = [e for e in self.entries.values() if e.label is not None]
            elif kind == "ok" and arg is not None:
                targets = [e for e in self.entries.values() if e.label == arg]
            else:
                targets = [self.entries[n] for n in numbers]
            for e in targets:
                if kind == "ok":
                    e.confirmed = e.label is not None
                elif kind == "drop":
                    self._move(e, None)
                else:
                    self._move(e, arg)
                self.applied += 1

    def _parse(self, text: str) -> list[tuple[str, list[Any], str | None]]:
        out: list[tuple[str, list[Any], str | None]] = []
        errors = []
        known = self.known_classes
        for lineno, raw in enumerate(text.splitlines(), 1):
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            where = f"corrections.txt line {lineno} ({raw.strip()!r})"
            if words[0] == "ok":
                rest = words[1:]
                if rest == ["all"]:
                    out.append(("ok", ["all"], None))
                elif len(rest) == 1 and not rest[0].isdigit():
                    if rest[0] not in known:
                        errors.append(f"{where}: unknown class {rest[0]!r} (known: {', '.join(known)})")
                    out.append(("ok", [], rest[0]))
                elif rest and all(w.isdigit() for w in rest):
                    out.append(("ok", self._numbers(rest, where, errors), None))
                else:
                    errors.append(f"{where}: write 'ok CLASS', 'ok all' or 'ok N N ...'")
                continue
            *nums, target = words
            if not nums or not all(w.isdigit() for w in nums):
                errors.append(f"{where}: expected item numbers then a class name or 'drop'")
                continue
            numbers = self._numbers(nums, where, errors)
            if target == "drop":
                out.append(("drop", numbers, None))
            elif target in known:
                out.append(("label", numbers, target))
            else:
                errors.append(f"{where}: unknown class {target!r} (known: {', '.join(known)}); "
                              f"for a class the model does not know yet, add --new-class {target}")
        if errors:
            raise DataError("nothing was changed; fix these first:\n  " + "\n  ".join(errors))
        return out

    def _numbers(self, words: list[str], where: str, errors: list[str]) -> list[int]:
        numbers = [int(w) for w in words]
        missing = [n for n in numbers if n not in self.entries]
        if missing:
            errors.append(f"{where}: no item numbered {missing[0]} (items are 1..{max(self.entries)})")
        return [n for n in numbers if n in self.entries]

    def _move(self, e: Entry, label: str | None) -> None:
        """Relabel (or drop, label None) and confirm: the person said so."""
        src = self._path(e)
        rel = f"{label}/{Path(e.file).name}" if label is not None else Path(e.file).name
        dst = (self.images / rel) if label is not None else (self.out / DROPPED / rel)
        if src != dst:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_file():
                src.replace(dst)
        e.file, e.label, e.confirmed = rel, label, label is not None

    def _path(self, e: Entry) -> Path:
        return self.images / e.file if e.label is not None else self.out / DROPPED / e.file

    def _pick_up_moves(self) -> None:
        """A file found in another class folder was relabelled by hand; one that is gone was dropped."""
        where = {p.name: p for p in self.images.glob("*/*") if p.is_file()}
        errors = []
        for e in self.entries.values():
            if e.label is None or self._path(e).is_file():
                continue
            found = where.get(Path(e.file).name)
            if found is None:
                e.label, e.confirmed = None, False  # deleted by hand: left out
                continue
            label = found.parent.name
            if label not in self.known_classes:
                errors.append(f"{found}: unknown class folder {label!r} (known: {', '.join(self.known_classes)}); "
                              f"for a new class add --new-class {label}")
                continue
            e.file, e.label, e.confirmed = f"{label}/{found.name}", label, True
        if errors:
            raise DataError("\n".join(errors))

    # --- output -------------------------------------------------------------------------------
    def save(self) -> None:
        """labels.json, fresh contact sheets, a corrections template; empty class folders removed."""
        self.out.mkdir(parents=True, exist_ok=True)
        for d in self.images.glob("*"):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        state = {
            "model_classes": self.model_classes,
            "new_classes": self.new_classes,
            "images": [asdict(e) for e in sorted(self.entries.values(), key=lambda e: e.number)],
        }
        tmp = self.out / "labels.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.out / "labels.json")
        self._write_sheets()
        corrections = self.out / "corrections.txt"
        if not corrections.exists():
            corrections.write_text(CORRECTIONS_HELP.format(src="COLLECTED", out=self.out))

    def _write_sheets(self) -> None:
        sheets = self.out / "sheets"
        shutil.rmtree(sheets, ignore_errors=True)
        sheets.mkdir(parents=True)
        by_label: dict[str, list[Entry]] = {}
        for e in sorted(self.entries.values(), key=lambda e: e.number):
            if e.label is not None:
                by_label.setdefault(e.label, []).append(e)
        per_page = COLUMNS * ROWS
        for label, entries in by_label.items():
            for page in range(math.ceil(len(entries) / per_page)):
                chunk = entries[page * per_page : (page + 1) * per_page]
                cv2.imwrite(str(sheets / f"{label}-{page + 1}.png"), self._sheet(label, chunk))

    def _sheet(self, label: str, entries: list[Entry]) -> np.ndarray:
        rows = math.ceil(len(entries) / COLUMNS)
        header = 28
        sheet = np.full((header + rows * TILE, COLUMNS * TILE, 3), 255, np.uint8)
        cv2.putText(sheet, f"{label}: {len(entries)} items", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                    cv2.LINE_AA)
        for i, e in enumerate(entries):
            img = cv2.imread(str(self._path(e)))
            y, x = header + (i // COLUMNS) * TILE, (i % COLUMNS) * TILE
            if img is not None:
                s = (TILE - 4) / max(img.shape[:2])
                small = cv2.resize(img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))),
                                   interpolation=cv2.INTER_AREA)
                sheet[y + 2 : y + 2 + small.shape[0], x + 2 : x + 2 + small.shape[1]] = small
            tag = f"#{e.number} {e.confidence:.2f}" + (" ok" if e.confirmed else "")
            cv2.rectangle(sheet, (x + 2, y + 2), (x + 2 + 9 * len(tag), y + 18), (0, 0, 0), -1)
            cv2.putText(sheet, tag, (x + 4, y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        return sheet

    def summary(self) -> dict[str, Any]:
        live = [e for e in self.entries.values() if e.label is not None]
        counts: dict[str, int] = {}
        for e in live:
            counts[e.label] = counts.get(e.label, 0) + 1  # type: ignore[index]
        return {
            "images": str(self.images), "sheets": str(self.out / "sheets"),
            "corrections": str(self.out / "corrections.txt"), "added": self.added, "applied": self.applied,
            "per_class": dict(sorted(counts.items())), "confirmed": sum(e.confirmed for e in live),
            "relabelled": sum(e.label != e.predicted for e in live),
            "dropped": sum(e.label is None for e in self.entries.values()),
        }


def confirmed_files(review_dir: Path) -> set[str] | None:
    """Absolute paths of the images whose label a person confirmed; None if this is no review folder."""
    state = review_dir / "labels.json"
    if not state.is_file():
        return None
    images = json.loads(state.read_text())["images"]
    return {str(review_dir / "images" / e["file"]) for e in images if e["confirmed"] and e["label"] is not None}
