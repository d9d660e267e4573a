"""Aerial tree crowns from the DeepForest 2.1.0 wheel (NEON RGB imagery, 10 cm pixels).

The wheel is installed with ``pip install --no-deps deepforest==2.1.0`` and never
imported: its data folder is found through the import system's metadata only
(``importlib.util.find_spec`` does not execute a top-level package).

Split (fixed; the test images are never used for training or tuning):

=====  ==========================================  =========  =====
split  image                                       size (WxH)  trees
=====  ==========================================  =========  =====
train  2019_YELL_2_528000_4978000_image_crop2.png  2299x2472    574
train  2019_YELL_2_541000_4977000_image_crop.png   1249x1035    279
test   OSBS_029.png                                 400x400      61
test   SOAP_061.png                                 400x400      37
=====  ==========================================  =========  =====

Every object is class ``"tree"`` (SOAP_061's ``Alive``/``Dead`` included). The XML
boxes are already 0-based pixel edges.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from convforge.errors import DatasetError

from .voc import SourceImage, parse_voc_xml

TREE_CLASSES: tuple[str, ...] = ("tree",)
TRAIN_STEMS = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")
TEST_STEMS = ("OSBS_029", "SOAP_061")
_TREE_NAMES = {"tree", "alive", "dead"}
_INSTALL_HINT = "install the data with: pip install --no-deps deepforest==2.1.0"


def deepforest_data_dir() -> Path:
    """The ``deepforest/data`` folder of the installed wheel, without importing it."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"the DeepForest tree data is not installed; {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        data = Path(location) / "data"
        if data.is_dir():
            return data
    raise DatasetError(f"deepforest is installed but has no data folder; {_INSTALL_HINT}")


def _tree_class(name: str) -> int | None:
    return 0 if name.strip().lower() in _TREE_NAMES else None


def tree_sources(split: str) -> list[SourceImage]:
    """The annotated source images of the ``"train"`` or ``"test"`` split."""
    if split not in ("train", "test"):
        raise DatasetError(f"trees split must be 'train' or 'test', not {split!r}")
    data = deepforest_data_dir()
    sources = []
    for stem in TRAIN_STEMS if split == "train" else TEST_STEMS:
        png, xml = data / f"{stem}.png", data / f"{stem}.xml"
        if not png.is_file() or not xml.is_file():
            raise DatasetError(f"missing {png.name} or {xml.name} in {data}; {_INSTALL_HINT}")
        width, height, boxes, labels, difficult = parse_voc_xml(xml, _tree_class, one_based=False, image_path=png)
        sources.append(SourceImage(stem, png, width, height, boxes, labels, difficult))
    return sources
