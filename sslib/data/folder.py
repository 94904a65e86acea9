"""ImageFolder trees that fail loudly: a missing or empty folder, train/val class lists that differ, a
class list naming absent classes and a corrupt image are one-line errors naming the path, not a silently
wrong dataset. ``skip_corrupt`` drops the images PIL cannot ``verify()`` instead, with one warning."""

from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from sslib.errors import ConfigError, MissingFileError

SHOWN = 5  # classes named in an error message before "..."


class CorruptImageError(ConfigError):
    """An image file PIL cannot read. Its message stays one line when a DataLoader worker re-raises it
    (the worker's "Caught ... Original Traceback" text is cut down to this error's own last line)."""

    def __str__(self) -> str:
        last = (super().__str__().strip().splitlines() or [""])[-1]
        return last.removeprefix(f"{type(self).__module__}.{type(self).__qualname__}: ")


def _reason(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def load_image(path: str, skip_corrupt: bool = False) -> Image.Image:
    """The RGB image at ``path``.

    Args:
        path: The image file.
        skip_corrupt: Whether the file passed ``data.skip_corrupt``'s up-front check (e.g. a truncated
            JPEG does); only the error message differs.

    Returns:
        The image, in RGB.

    Raises:
        CorruptImageError: If the file is unreadable; one line naming it.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        how = (
            "it passed data.skip_corrupt's check (PIL verify() does not decode); remove it"
            if skip_corrupt
            else "remove it, or set data.skip_corrupt=true to drop unreadable images up front"
        )
        raise CorruptImageError(f"corrupt image {path}: {_reason(err)}; {how}") from None


def _readable(path: str) -> bool:
    """Whether PIL's ``verify()`` (headers and PNG checksums, no decoding) accepts ``path``."""
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=4096)  # the data module builds the train split twice (training and kNN bank)
def _unreadable(paths: tuple[str, ...]) -> frozenset[str]:
    return frozenset(p for p in paths if not _readable(p))


def names(classes: Sequence[str]) -> str:
    """The first few of ``classes``, comma-separated, with the total when some are left out.

    Args:
        classes: Class names.

    Returns:
        The text for an error message.
    """
    shown = ", ".join(classes[:SHOWN])
    return shown if len(classes) <= SHOWN else f"{shown}, ... ({len(classes)} in all)"


def class_folders(path: Path) -> list[str]:
    """The sorted class sub-folders of ``path``.

    Args:
        path: A split's folder, e.g. ``root/train``.

    Returns:
        The sub-folders' names, sorted.

    Raises:
        MissingFileError: If ``path`` is missing or has no sub-folder (a ``FileNotFoundError``).
    """
    if not path.is_dir():
        raise MissingFileError(f"image folder {path} does not exist; expected {path}/<class>/<image files>")
    classes = sorted(entry.name for entry in os.scandir(path) if entry.is_dir())
    if not classes:
        raise MissingFileError(f"no class folders in {path}; expected {path}/<class>/<image files>")
    return classes


def read_class_list(path: str | Path) -> list[str]:
    """The class names in file ``path``, one per line (e.g. WordNet ids ``n02869837``).

    Blank lines and ``#`` comments are ignored.

    Args:
        path: The class list file.

    Returns:
        The class names, in file order.

    Raises:
        MissingFileError: If the file does not exist.
        ConfigError: If it names no class or repeats one.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"class list {path} does not exist; expected a text file, one class per line")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    classes = [line for line in lines if line]
    if not classes:
        raise ConfigError(f"class list {path} names no class; expected one class folder name per line")
    repeated = sorted(c for c, n in Counter(classes).items() if n > 1)
    if repeated:
        raise ConfigError(f"class list {path} repeats classes: {names(repeated)}")
    return classes


def _check_present(classes: Sequence[str], folder: Path, found: Sequence[str], what: str) -> None:
    present = set(found)
    absent = [c for c in classes if c not in present]
    if absent:
        raise ConfigError(f"{len(absent)} {what} have no folder in {folder}: {names(absent)}")


def _split_classes(root: Path, split: str, classes: Sequence[str] | None) -> list[str]:
    """The classes of ``root/split``: ``classes`` or every class folder, checked to be folders of both
    ``root/train`` and ``root/val``."""
    other = "val" if split == "train" else "train"
    found = {s: class_folders(root / s) for s in (split, other)}  # the requested split's error first
    if classes is not None:
        for s in ("train", "val"):
            _check_present(classes, root / s, found[s], "classes of the class list")
        return sorted(classes)
    _check_present(found["train"], root / "val", found["val"], f"classes of {root / 'train'}")
    _check_present(found["val"], root / "train", found["train"], f"classes of {root / 'val'}")
    return found[split]


class CheckedImageFolder(ImageFolder):
    """``ImageFolder`` over the sub-folders ``classes`` of ``root``, reading images with :func:`load_image`.

    Args:
        root: The split's folder.
        classes: The class sub-folders to read; labels follow their sorted order.
        transform: Applied to each image.
        skip_corrupt: Whether the files PIL cannot ``verify()`` are dropped (one warning with the count).

    Raises:
        ConfigError: If a class is left with no image.
    """

    samples: list[tuple[str, int]]  # (path, label), as ImageFolder sets them

    def __init__(
        self,
        root: Path,
        classes: Sequence[str],
        transform: Callable | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.selected = sorted(classes)
        loader = functools.partial(load_image, skip_corrupt=skip_corrupt)
        super().__init__(str(root), transform=transform, loader=loader, allow_empty=True)
        if skip_corrupt:
            self._drop_unreadable()
        self._check_no_empty_class(skip_corrupt)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """The selected classes, whatever the folder holds (``ImageFolder``'s hook).

        Args:
            directory: The split's folder (unused).

        Returns:
            ``(classes, {class: label})``, classes sorted.
        """
        return self.selected, {c: i for i, c in enumerate(self.selected)}

    def _drop_unreadable(self) -> None:
        by_class: dict[int, list[str]] = {}
        for path, target in self.samples:
            by_class.setdefault(target, []).append(path)
        with ThreadPoolExecutor() as pool:
            bad = frozenset().union(*pool.map(_unreadable, (tuple(p) for p in by_class.values())))
        if bad:
            kept = [s for s in self.samples if s[0] not in bad]
            warnings.warn(
                f"skipped {len(bad)} corrupt images of {len(self.samples)} in {self.root}", stacklevel=2
            )
            self.samples = self.imgs = kept
            self.targets = [t for _, t in kept]

    def _check_no_empty_class(self, skip_corrupt: bool) -> None:
        counts = Counter(self.targets)
        empty = [c for i, c in enumerate(self.classes) if counts[i] == 0]
        if empty:
            readable = " readable" if skip_corrupt else ""
            raise ConfigError(
                f"{len(empty)} class folders of {self.root} hold no{readable} image files "
                f"({' '.join(IMG_EXTENSIONS)}): {names(empty)}"
            )


def image_folder(
    root: Path,
    split: str,
    transform: Callable | None = None,
    classes: Sequence[str] | None = None,
    skip_corrupt: bool = False,
) -> CheckedImageFolder:
    """Split ``split`` of the ImageFolder trees ``root/train`` and ``root/val``, after the module's checks.

    Args:
        root: The folder holding ``train/`` and ``val/``.
        split: ``"train"`` or ``"val"``.
        transform: Applied to each image.
        classes: The classes to keep; ``None`` keeps all, which must be the same in both splits.
        skip_corrupt: Whether the files PIL cannot ``verify()`` are dropped.

    Returns:
        The dataset.

    Raises:
        MissingFileError: If ``root`` or a split's folder is missing or has no class folder.
        ConfigError: If a class is absent from a split or holds no image.
    """
    if not root.is_dir():
        raise MissingFileError(
            f"dataset root {root} does not exist; expected {root}/train/<class>/<image files> "
            f"and {root}/val/<class>/<image files>"
        )
    return CheckedImageFolder(root / split, _split_classes(root, split, classes), transform, skip_corrupt)
