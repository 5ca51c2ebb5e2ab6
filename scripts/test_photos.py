"""Make the real photos the port tests use, from a checkout of deepface (MIT licence).

usage: python scripts/test_photos.py <deepface checkout> [--out tests/data]

- ``photos/``: deepface's ``tests/unit/dataset/img35.jpg`` and ``img41.jpg`` scaled so that
  the shorter side is 256 pixels (torchvision's ImageNet resize; the centre 224 crop is the
  test's), JPEG quality 95;
- ``faces/``: the largest MTCNN face of each photo named in :data:`FACES`, widened by 44
  pixels of margin at 160x160 scale (FaceNet's alignment margin), resized to 160x160;
- ``faces/pairs.csv``: the pairs of those photos that deepface's ``master.csv`` labels as the
  same person (Yes) or not (No).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("img35.jpg", "img41.jpg")
FACES = ("img1.jpg", "img2.jpg", "img4.jpg", "img5.jpg", "img13.jpg", "img14.jpg", "img15.jpg",
         "img18.jpg", "img19.jpg", "img8.jpg", "img9.jpg", "img20.jpg", "img21.jpg", "img16.jpg",
         "img17.jpg", "img3.jpg", "img12.jpg")  # fmt: skip
SIZE, MARGIN = 160, 44


def shorter_side(image: Image.Image, side: int) -> Image.Image:
    scale = side / min(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)


def face_crop(image: Image.Image, detector) -> Image.Image:
    rgb = np.asarray(image)
    x, y, w, h = max(detector.detect_faces(rgb), key=lambda d: d["box"][2] * d["box"][3])["box"]
    pad = MARGIN / 2 * max(w, h) / SIZE
    box = (max(0, x - pad), max(0, y - pad), min(image.width, x + w + pad),
           min(image.height, y + h + pad))  # fmt: skip
    return image.crop(tuple(round(v) for v in box)).resize((SIZE, SIZE), Image.BILINEAR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("deepface", type=Path)
    parser.add_argument("--out", type=Path, default=Path("tests/data"))
    args = parser.parse_args()
    source = args.deepface / "tests" / "unit" / "dataset"
    (args.out / "photos").mkdir(parents=True, exist_ok=True)
    (args.out / "faces").mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        image = shorter_side(Image.open(source / name).convert("RGB"), 256)
        image.save(args.out / "photos" / name, quality=95)

    from mtcnn import MTCNN

    detector = MTCNN()
    for name in FACES:
        crop = face_crop(Image.open(source / name).convert("RGB"), detector)
        crop.save(args.out / "faces" / name, quality=95)
    with open(source / "master.csv") as file, open(args.out / "faces" / "pairs.csv", "w") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file_x", "file_y", "same"])
        for row in csv.DictReader(file):
            if row["file_x"] in FACES and row["file_y"] in FACES:
                writer.writerow([row["file_x"], row["file_y"], int(row["Decision"] == "Yes")])


if __name__ == "__main__":
    main()
