"""Training crops for the zoo's ``natural`` base from photographs Debian ships (never Kodak).

    apt-get download mate-backgrounds plasma-workspace-wallpapers   # into DEBS
    for d in DEBS/*.deb; do dpkg -x "$d" DEBS/x; done
    python -m experiments.natural_data DEBS/x OUT

Writes ``OUT/photos/<name>_<scale>_<i>.png``: each photograph listed in :data:`PHOTOS` (the
camera photographs among those packages' wallpapers; illustrations and renders are left out)
downscaled by 2, 3 and 4 (Lanczos; this also removes the JPEG artefacts of the originals) and
cut into 256 x 256 tiles. The licences are in each package's ``usr/share/doc/*/copyright``
(GPL / CC-BY-SA / LGPL wallpapers); the base's metadata names the packages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

#: The photographs (paths inside the extracted packages).
PHOTOS = [
    *(f"usr/share/backgrounds/mate/nature/{n}.jpg" for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm", "TwoWings",
        "Wood", "YellowFlower")),
    *(f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg" for n in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
        "OneStandsOut", "Path", "summer_1am")),
    "usr/share/wallpapers/Volna/contents/images/5120x2880.jpg",
]
TILE = 256


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="folder the .deb packages were extracted into")
    p.add_argument("out", type=Path)
    args = p.parse_args()
    dest = args.out / "photos"
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for rel in PHOTOS:
        src = args.root / rel
        name = src.parent.parent.parent.name if "wallpapers" in rel else src.stem
        with Image.open(src) as im:
            im = im.convert("RGB")
            for scale in (2, 3, 4):
                small = im.resize((im.width // scale, im.height // scale), Image.Resampling.LANCZOS)
                for i, (y, x) in enumerate((y, x) for y in range(0, small.height - TILE + 1, TILE) for x in range(0, small.width - TILE + 1, TILE)):
                    small.crop((x, y, x + TILE, y + TILE)).save(dest / f"{name}_{scale}_{i:03d}.png")
                    count += 1
    print(f"{count} tiles of {TILE}x{TILE} from {len(PHOTOS)} photographs in {dest}")


if __name__ == "__main__":
    main()
