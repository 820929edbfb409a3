"""The real datasets kdbench knows: where each lies under the data root, how its images pair with labels, which label
encoding its files use, its official split sizes and GKD's test/train scales.

One :class:`DatasetSpec` per dataset *view* (ACDC is four views, one per condition; Potsdam two, one per modality),
keyed by an explicit name. Facts from datasets.md §2-§11 and §13 (GKD ``task_learning/configs/_base_/datasets``,
mmseg converters); layout alternatives are the common packagings of the same files.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbench.data.real.holdout import val_count
from kdbench.data.real.labels import class_table
from kdbench.errors import UserError

PREPARE_HINT = "convert it first: kdbench data prepare --suite dg5 --data-root DIR"


@dataclass(frozen=True)
class LabelFormat:
    """One kind of label file. ``suffix`` replaces the image suffix (mmseg pairing) or follows the number
    (``prefix`` + number + ``suffix``, number pairing). ``decoder``: ``"pillow"`` (palette PNGs by index, grey
    values, or colours through the encoding's colour table) or ``"opencv-red"`` (SYNTHIA: 16-bit 3-channel PNG,
    class id in the R channel)."""

    suffix: str
    encoding: str
    prefix: str = ""
    decoder: str = "pillow"


@dataclass(frozen=True)
class Layout:
    """Where one split's files lie, relative to the dataset root (``{split}`` is replaced by the split name).
    Labels pair with images by mmseg's rule (same relative path under ``labels``, suffix swapped) or, with
    ``pairing="number"``, by the number after ``image_prefix``. Per image, the first label format found wins."""

    images: str
    image_suffix: str
    labels: str | None = None
    label_formats: tuple[LabelFormat, ...] = ()
    pairing: str = "mmseg"
    image_prefix: str = ""

    def image_dir(self, split: str) -> str:
        return self.images.format(split=split)

    def label_dir(self, split: str) -> str | None:
        return self.labels.format(split=split) if self.labels is not None else None


@dataclass(frozen=True)
class SplitSpec:
    """A split, its official image count, and its layouts (alternatives: the first whose image folder exists)."""

    name: str
    size: int
    layouts: tuple[Layout, ...]

    @property
    def labelled(self) -> bool:
        return self.layouts[0].labels is not None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset view. ``folders``: its folder under the data root (GKD's name first, then accepted alternatives);
    for ``prepared`` datasets the folder under the prepare cache (or, already converted, under the data root).
    ``test_scale``: mmseg ``Resize(scale, keep_ratio=True)`` of GKD's test pipeline (``None``: GKD never tests on
    it). ``train_scale_base``: the short-edge base of GKD's ``RandomChoiceResize``. ``train_split``: the split a
    benchmark trains on as source (``None``: target only); ``eval_split``: the split it is scored on as target (for
    the synthetic sources, which have no held-out split, their only split, less its validation slice).
    ``held_out``: a split that ``data prepare`` converts from the held-out slice of the raw training list only
    (Mapillary, never trained on): the converted copy *is* the validation slice, read in full, never cut again.
    ``path_keys``: the ``data.paths`` keys that override its folder, most specific first."""

    name: str
    title: str
    table: str
    classes: tuple[str, ...]
    folders: tuple[str, ...]
    splits: tuple[SplitSpec, ...]
    test_scale: tuple[int, int] | None
    train_scale_base: int
    eval_split: str
    train_split: str | None
    prepared: bool = False
    reduce_zero_label: bool = False
    held_out: str | None = None
    path_keys: tuple[str, ...] = ()
    source: str = ""
    note: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def folder(self) -> str:
        return self.folders[0]

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return class_table(self.table).palette

    @property
    def val_split(self) -> str | None:
        """The labelled split whose held-out slice is this dataset's validation images
        (:mod:`kdbench.data.real.holdout`): its training split, whether a benchmark trains on it or scores it as a
        target, or its :attr:`held_out` split, the slice already cut by ``data prepare`` (Mapillary); ``None`` where
        the catalog lists none (RescueNet, a test set)."""
        return self.held_out or self.train_split

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits)

    @property
    def official_sizes(self) -> dict[str, int]:
        return {s.name: s.size for s in self.splits}

    def split(self, name: str | None) -> SplitSpec:
        for s in self.splits:
            if s.name == name:
                return s
        if name is None:
            raise UserError(f"dataset {self.name} has no training split (it is a target only); its splits: "
                            f"{', '.join(self.split_names)}")
        raise UserError(f"dataset {self.name} has no split {name!r}; its splits: {', '.join(self.split_names)}")

    def label_formats(self) -> tuple[LabelFormat, ...]:
        """Every label format of every split, without repeats, in catalog order."""
        seen: dict[LabelFormat, None] = {}
        for s in self.splits:
            for layout in s.layouts:
                seen.update(dict.fromkeys(layout.label_formats))
        return tuple(seen)


def _spec(name: str, title: str, table: str, **kw) -> DatasetSpec:
    kw.setdefault("path_keys", (name,))
    return DatasetSpec(name, title, table, class_table(table).classes, **kw)


CS_TRAINIDS = "cityscapes19-trainids"
CS_LABELIDS = "cityscapes-labelids"

# --- GTA5 (datasets.md §3): all 24,966 frames train; converted _labelTrainIds.png or the raw P-mode labelId PNG.
_GTA = Layout("images", ".png", "labels", (LabelFormat("_labelTrainIds.png", CS_TRAINIDS),
                                           LabelFormat(".png", CS_LABELIDS)))
# --- SYNTHIA RAND-CITYSCAPES (§4): DAFormer-converted _labelTrainIds.png or the raw 16-bit GT/LABELS PNG.
_SYNTHIA = Layout("RGB", ".png", "GT/LABELS", (LabelFormat("_labelTrainIds.png", CS_TRAINIDS),
                                               LabelFormat(".png", "synthia-ids", decoder="opencv-red")))
# --- UrbanSyn (§8): rgb/rgb_0001.png pairs with ss/ss_0001.png (or GKD's renamed ss/rgb_0001.png).
_URBANSYN = Layout("rgb", ".png", "ss", (LabelFormat(".png", "urbansyn-ss", prefix="ss_"),
                                         LabelFormat(".png", "urbansyn-ss", prefix="rgb_")),
                   pairing="number", image_prefix="rgb_")


def _cityscapes(split: str) -> Layout:
    return Layout(f"leftImg8bit/{split}", "_leftImg8bit.png", f"gtFine/{split}",
                  (LabelFormat("_gtFine_labelTrainIds.png", CS_TRAINIDS),
                   LabelFormat("_gtFine_labelIds.png", CS_LABELIDS)))


def _bdd(split: str) -> tuple[Layout, ...]:
    # 10K semantic-segmentation release (mmseg/GKD), then the older bdd100k_seg release (seg/labels/*_train_id.png).
    return (Layout(f"images/10k/{split}", ".jpg", f"labels/sem_seg/masks/{split}", (LabelFormat(".png", CS_TRAINIDS),)),
            Layout(f"seg/images/{split}", ".jpg", f"seg/labels/{split}", (LabelFormat("_train_id.png", CS_TRAINIDS),)))


def _acdc(cond: str, split: str, labelled: bool = True) -> Layout:
    if not labelled:
        return Layout(f"rgb_anon/{cond}/{split}", "_rgb_anon.png")
    return Layout(f"rgb_anon/{cond}/{split}", "_rgb_anon.png", f"gt/{cond}/{split}",
                  (LabelFormat("_gt_labelTrainIds.png", CS_TRAINIDS), LabelFormat("_gt_labelIds.png", CS_LABELIDS)))


def _isprs(split: str) -> Layout:
    return Layout(f"img_dir/{split}", ".png", f"ann_dir/{split}", (LabelFormat(".png", "isprs-ann"),))


#: Mapillary Vistas v1.2's training split: 18,000 images, of which ``data prepare`` converts only the held-out slice
MAPILLARY_TRAINING = 18000


def _mapillary(split: str) -> Layout:
    return Layout(f"half/{split}_img", ".jpg", f"half/{split}_label", (LabelFormat(".png", CS_TRAINIDS),))


ACDC_VAL = {"night": 106, "snow": 100, "fog": 100, "rain": 100}
ACDC_TRAIN, ACDC_TEST = 400, 500

_ALL = [
    _spec("gta5", "GTA5 (Playing for Data)", "cityscapes19", folders=("GTA5", "gta", "gta5", "GTAV"),
          splits=(SplitSpec("train", 24966, (_GTA,)),), test_scale=(1280, 720), train_scale_base=512,
          eval_split="train", train_split="train", source="datasets.md §3"),
    _spec("synthia", "SYNTHIA RAND-CITYSCAPES", "cityscapes19",
          folders=("SYNTHIA_RAND_CITYSCAPES/RAND_CITYSCAPES", "synthia/RAND_CITYSCAPES", "RAND_CITYSCAPES",
                   "SYNTHIA/RAND_CITYSCAPES", "synthia", "SYNTHIA"),
          splits=(SplitSpec("train", 9400, (_SYNTHIA,)),), test_scale=None, train_scale_base=512,
          eval_split="train", train_split="train", source="datasets.md §4"),
    _spec("urbansyn", "UrbanSyn", "cityscapes19", folders=("UrbanSyn", "urbansyn"),
          splits=(SplitSpec("train", 7539, (_URBANSYN,)),), test_scale=None, train_scale_base=512,
          eval_split="train", train_split="train", source="datasets.md §8"),
    _spec("cityscapes", "Cityscapes", "cityscapes19", folders=("cityscapes", "Cityscapes"),
          splits=(SplitSpec("train", 2975, (_cityscapes("train"),)), SplitSpec("val", 500, (_cityscapes("val"),))),
          test_scale=(1024, 512), train_scale_base=512, eval_split="val", train_split="train",
          source="datasets.md §2"),
    _spec("bdd100k", "BDD100K", "cityscapes19", folders=("bdd100k", "BDD100K", "bdd100k/bdd100k"),
          splits=(SplitSpec("train", 7000, _bdd("train")), SplitSpec("val", 1000, _bdd("val"))),
          test_scale=(1280, 720), train_scale_base=512, eval_split="val", train_split="train",
          source="datasets.md §5"),
    _spec("mapillary", "Mapillary Vistas v1.2 (half resolution)", "cityscapes19", folders=("mapillary", "Mapillary"),
          splits=(SplitSpec("val", 2000, (_mapillary("val"),)),
                  SplitSpec("train", val_count(MAPILLARY_TRAINING), (_mapillary("train"),))),
          test_scale=(1024, 512), train_scale_base=512, eval_split="val", train_split=None, prepared=True,
          held_out="train", source="datasets.md §6"),
    *[_spec(f"acdc-{cond}", f"ACDC {cond}", "cityscapes19", folders=("acdc", "ACDC"),
            splits=(SplitSpec("train", ACDC_TRAIN, (_acdc(cond, "train"),)),
                    SplitSpec("val", size, (_acdc(cond, "val"),)),
                    SplitSpec("test", ACDC_TEST, (_acdc(cond, "test", labelled=False),))),
            test_scale=(960, 540), train_scale_base=540, eval_split="val", train_split="train",
            path_keys=(f"acdc-{cond}", "acdc"), source="datasets.md §7")
      for cond, size in ACDC_VAL.items()],
    *[_spec(f"potsdam-{mod.lower()}", f"ISPRS Potsdam {mod}", "isprs6", folders=(f"potsdam/{mod}",),
            splits=(SplitSpec("train", 3456, (_isprs("train"),)), SplitSpec("val", 2016, (_isprs("val"),))),
            test_scale=(512, 512), train_scale_base=512, eval_split="val", train_split="train", prepared=True,
            reduce_zero_label=True, source="datasets.md §9")
      for mod in ("RGB", "IRRG")],
    _spec("vaihingen-irrg", "ISPRS Vaihingen IRRG", "isprs6", folders=("vaihingen",),
          splits=(SplitSpec("train", 344, (_isprs("train"),)), SplitSpec("val", 398, (_isprs("val"),))),
          test_scale=(512, 512), train_scale_base=512, eval_split="val", train_split="train", prepared=True,
          reduce_zero_label=True, source="datasets.md §10"),
    _spec("rescuenet", "RescueNet (GKD 5 classes)", "rescue5", folders=("RescueNet", "rescuenet"),
          splits=(SplitSpec("test", 450, (Layout("test-org-img", ".jpg", "test-label-img",
                                                 (LabelFormat("_lab.png", "rescue5-lab"),)),)),),
          test_scale=(512, 512), train_scale_base=512, eval_split="test", train_split=None, reduce_zero_label=True,
          source="datasets.md §11",
          note="GKD reads a 5-class relabel (values 1..5, 0 = ignore) of the official 11-class test labels in "
               "test-label-img/; its relabel script is not published, so the official test/test-label-img is not "
               "read"),
]

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _ALL}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]
