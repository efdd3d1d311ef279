"""A compositional image-caption dataset that Sightline makes itself.

Each picture shows one, two or three identical objects (shape, colour, size)
grouped at one place (top, bottom, left, right, centre) on a background
(plain or textured).  Its captions name every one of those attributes, in
several templates with synonyms, so a caption determines its picture up to
the small jitter added to positions, sizes and colours: retrieval on it is
learnable from scratch in minutes, yet far from trivial (7,200 attribute
combinations, so 1,000 test pictures are nearly all distinguishable only by
getting every attribute right).  It is written as a Karpathy-split JSON file
plus an image folder, the format the loaders and ``sightline eval`` read.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

ANNOTATIONS_NAME = "dataset_shapes.json"
IMAGES_DIR = "images"

#: name -> (singular words, plural words); the first is the canonical one.
SHAPES = {
    "circle": (["circle", "disc", "dot"], ["circles", "discs", "dots"]),
    "square": (["square", "box", "block"], ["squares", "boxes", "blocks"]),
    "triangle": (["triangle", "wedge"], ["triangles", "wedges"]),
    "diamond": (["diamond", "rhombus"], ["diamonds", "rhombuses"]),
    "cross": (["cross", "plus sign"], ["crosses", "plus signs"]),
    "star": (["star"], ["stars"]),
}
COLOURS = {
    "red": ((215, 35, 35), ["red", "scarlet"]),
    "green": ((40, 170, 60), ["green", "emerald"]),
    "blue": ((35, 70, 215), ["blue", "navy"]),
    "yellow": ((240, 215, 35), ["yellow", "lemon"]),
    "purple": ((135, 45, 175), ["purple", "violet"]),
    "orange": ((245, 135, 25), ["orange", "amber"]),
    "pink": ((245, 125, 185), ["pink", "rose"]),
    "cyan": ((40, 205, 215), ["cyan", "turquoise"]),
}
SIZES = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
POSITIONS = {
    "top": ["at the top", "along the top", "in the upper part"],
    "bottom": ["at the bottom", "along the bottom", "in the lower part"],
    "left": ["on the left", "at the left side", "in the left part"],
    "right": ["on the right", "at the right side", "in the right part"],
    "centre": ["in the centre", "in the middle", "in the center"],
}
BACKGROUNDS = {
    "white": ["white", "plain white"],
    "black": ["black", "dark"],
    "grey": ["grey", "gray"],
    "striped": ["striped", "stripy"],
    "checkered": ["checkered", "chequered"],
}
COUNTS = {1: ["one", "a single", "a"], 2: ["two", "a pair of", "2"], 3: ["three", "3"]}

TEMPLATES = [
    "{count} {size} {colour} {shape} {position} on a {background} background",
    "a {background} background with {count} {size} {colour} {shape} {position}",
    "{position}, {count} {size} {colour} {shape} on {background}",
    "picture of {count} {colour} {shape}, {size}, {position}, {background} backdrop",
    "on a {background} background there {be} {count} {size} {colour} {shape} {position}",
    "{count} {colour} {shape} of {size} size {position} against a {background} background",
]


@dataclass(frozen=True)
class Scene:
    """What one picture shows; captions and pixels are both drawn from it."""

    shape: str
    colour: str
    size: str
    position: str
    background: str
    count: int

    def canonical(self) -> str:
        plural = self.count > 1
        shape = SHAPES[self.shape][1 if plural else 0][0]
        return (f"{COUNTS[self.count][0]} {self.size} {self.colour} {shape} {POSITIONS[self.position][0]} "
                f"on a {self.background} background")


def random_scene(rng: random.Random) -> Scene:
    return Scene(rng.choice(list(SHAPES)), rng.choice(list(COLOURS)), rng.choice(list(SIZES)),
                 rng.choice(list(POSITIONS)), rng.choice(list(BACKGROUNDS)), rng.choice(list(COUNTS)))


def captions_for(scene: Scene, rng: random.Random, n: int = 5) -> list[str]:
    """``n`` different captions: random templates and synonyms, every attribute named."""
    out: list[str] = []
    for _ in range(50 * n):
        text = _one_caption(scene, rng)
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def _one_caption(scene: Scene, rng: random.Random) -> str:
    plural = scene.count > 1
    count = rng.choice(COUNTS[scene.count])
    shape = rng.choice(SHAPES[scene.shape][1 if plural else 0])
    if count == "a" and shape[0] in "aeiou":
        count = "an"
    text = rng.choice(TEMPLATES).format(
        count=count, size=rng.choice(SIZES[scene.size]), colour=rng.choice(COLOURS[scene.colour][1]),
        shape=shape, position=rng.choice(POSITIONS[scene.position]),
        background=rng.choice(BACKGROUNDS[scene.background]), be="are" if plural else "is")
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


# ------------------------------------------------------------------ drawing
_SUPERSAMPLE = 2  # draw at twice the size and downscale: anti-aliased edges


def render(scene: Scene, rng: random.Random, size: int = 64) -> Image.Image:
    """Draw ``scene`` at ``size`` pixels with small random jitter."""
    big = size * _SUPERSAMPLE
    image = _background(scene.background, big, rng)
    draw = ImageDraw.Draw(image)
    radius = big * (0.075 if scene.size == "small" else 0.13) * rng.uniform(0.9, 1.1)
    colour = tuple(max(0, min(255, c + rng.randint(-18, 18))) for c in COLOURS[scene.colour][0])
    for cx, cy in _centres(scene.position, scene.count, big, radius, rng):
        _draw_shape(draw, scene.shape, cx, cy, radius, colour)
    return image.resize((size, size), Image.Resampling.BOX)


def _background(kind: str, size: int, rng: random.Random) -> Image.Image:
    shade = rng.randint(-12, 12)
    plain = {"white": 240, "black": 25, "grey": 128}
    if kind in plain:
        v = plain[kind] + shade
        return Image.new("RGB", (size, size), (v, v, v))
    image = Image.new("RGB", (size, size), (215 + shade,) * 3)
    draw = ImageDraw.Draw(image)
    dark = (95 + shade,) * 3
    step = size // 8
    if kind == "striped":
        for y in range(0, size, step):
            draw.rectangle([0, y, size, y + step // 2 - 1], fill=dark)
    else:  # checkered
        for y in range(0, size, step):
            for x in range((y // step) % 2 * step, size, 2 * step):
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=dark)
    return image


def _centres(position: str, count: int, size: int, radius: float, rng: random.Random):
    """Object centres: a row (top/bottom/centre) or a column (left/right) of ``count``."""
    third = size / 3
    along = [size * (i + 1) / (count + 1) for i in range(count)]
    across = {"top": third / 2, "bottom": size - third / 2, "left": third / 2, "right": size - third / 2,
              "centre": size / 2}[position]
    jitter = lambda: rng.uniform(-0.04, 0.04) * size  # noqa: E731 - tiny helper
    if position in ("left", "right"):
        return [(across + jitter(), a + jitter()) for a in along]
    return [(a + jitter(), across + jitter()) for a in along]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        s = r * 0.88
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif shape == "cross":
        t = r * 0.38
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=colour)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=colour)
    elif shape == "star":
        import math

        points = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
        draw.polygon(points, fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


# ---------------------------------------------------------------- the files
def generate(out_dir: Path, splits: Optional[dict[str, int]] = None, *, size: int = 64, seed: int = 0,
             captions_per_image: int = 5, progress: bool = False) -> Path:
    """Write images and ``dataset_shapes.json`` (Karpathy format) under ``out_dir``.

    Deterministic for a given seed; every picture's scene, jitter and
    captions come from its own generator seeded by (seed, index), so the
    test split stays the same whatever the size of the training split.
    Returns the annotations path.  An existing, identical dataset is kept.
    """
    splits = splits or {"train": 10_000, "val": 500, "test": 1_000}
    out_dir = Path(out_dir)
    annotations = out_dir / ANNOTATIONS_NAME
    signature = {"generator": "sightline-shapes", "version": 2, "splits": splits, "size": size, "seed": seed,
                 "captions_per_image": captions_per_image}
    if _already_generated(annotations, signature):
        log.info("dataset already generated at %s", out_dir)
        return annotations
    entries = []
    bar = _bar(sum(splits.values()), progress)
    for split, count in splits.items():
        # One folder per split (Karpathy's "filepath", as in COCO), so a split can be indexed alone.
        folder = out_dir / IMAGES_DIR / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = random.Random(f"{seed}/{split}/{i}")
            scene = random_scene(rng)
            filename = f"{split}_{i:05d}.png"
            render(scene, rng, size).save(folder / filename, optimize=False, compress_level=1)
            captions = captions_for(scene, rng, captions_per_image)
            entries.append({"filepath": split, "filename": filename, "split": split, "imgid": len(entries),
                            "scene": scene.__dict__, "sentences": [{"raw": c} for c in captions]})
            bar.update(1)
    bar.close()
    payload = {"dataset": "shapes", "signature": signature, "images": entries}
    tmp = annotations.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(annotations)  # written last: a complete file means a complete dataset
    return annotations


def _already_generated(annotations: Path, signature: dict) -> bool:
    try:
        existing = json.loads(annotations.read_text())
    except (OSError, ValueError):
        return False
    if existing.get("signature") != json.loads(json.dumps(signature)):
        return False
    images = annotations.parent / IMAGES_DIR
    return all((images / e["filepath"] / e["filename"]).is_file() for e in existing.get("images", []))


def _bar(total: int, enabled: bool):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc="generating", unit="img", file=sys.stderr, disable=not enabled)

