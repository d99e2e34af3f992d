"""Vertebral levels: names, VerSe label numbers and ``--levels`` ranges.

xfit labels vertebrae with the VerSe numbering everywhere (phantom label maps, training crops,
reconstruction labels, prior metadata):

| level | label |
|---|---|
| C1..C7 | 1..7 |
| T1..T12 | 8..19 |
| L1..L5 | 20..24 |
| L6 (transitional) | 25 |
| sacrum (S1) | 26 |
| coccyx | 27 |
| T13 (transitional) | 28 |

Anatomical order (cranial to caudal) puts T13 between T12 and L1 and L6 after L5, so a range such
as ``T12-L1`` includes a T13 where a collection has one.
"""

from __future__ import annotations

from .errors import InputError

#: Level name -> VerSe label value.
LEVEL_TO_LABEL: dict[str, int] = {
    **{f"C{i}": i for i in range(1, 8)},
    **{f"T{i}": 7 + i for i in range(1, 13)},
    **{f"L{i}": 19 + i for i in range(1, 6)},
    "L6": 25,
    "S1": 26,
    "Co": 27,
    "T13": 28,
}
#: VerSe label value -> level name.
LABEL_TO_LEVEL: dict[int, str] = {v: k for k, v in LEVEL_TO_LABEL.items()}
#: Level names cranial to caudal.
ANATOMICAL_ORDER: tuple[str, ...] = tuple(
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 14)] + [f"L{i}" for i in range(1, 7)] + ["S1", "Co"]
)
#: Labels of the mobile vertebrae (what a crop may be centred on): C1..L6 and T13.
VERTEBRA_LABELS: tuple[int, ...] = tuple(LEVEL_TO_LABEL[n] for n in ANATOMICAL_ORDER if n not in ("S1", "Co"))


def _canonical(name: str) -> str:
    s = str(name).strip()
    if not s:
        raise InputError("empty vertebral level name")
    key = s[0].upper() + s[1:].lower()
    if key in LEVEL_TO_LABEL:
        return key
    raise InputError(f"unknown vertebral level {name!r}; expected one of C1-C7, T1-T12, L1-L5 (or T13, L6, S1)")


def level_label(name: str) -> int:
    """VerSe label value of a level name (``"L1"`` -> 20; case-insensitive).

    Raises:
        InputError: not a level name.
    """
    return LEVEL_TO_LABEL[_canonical(name)]


def level_name(label: int) -> str:
    """Level name of a VerSe label value (20 -> ``"L1"``).

    Raises:
        InputError: not a VerSe vertebra label.
    """
    try:
        return LABEL_TO_LEVEL[int(label)]
    except (KeyError, ValueError, TypeError):
        raise InputError(f"{label!r} is not a VerSe vertebra label (1-28)") from None


def region(label: int) -> str:
    """``"C"``, ``"T"``, ``"L"`` or ``"S"`` for a VerSe label (``"Co"`` counts as ``"S"``)."""
    name = level_name(label)
    return "S" if name in ("S1", "Co") else name[0]


def parse_levels(text: str | None) -> tuple[int, ...]:
    """Parse ``--levels``: ``"T10-L5"``, ``"L1,L3"``, ``"T12-L2,L4"`` or ``"all"``.

    Returns:
        VerSe labels in anatomical order, without repeats; ``"all"`` or ``None`` gives
        :data:`VERTEBRA_LABELS`.

    Raises:
        InputError: an unknown level, an empty item or a range that runs caudal to cranial.
    """
    if text is None or str(text).strip().lower() == "all":
        return VERTEBRA_LABELS
    chosen: list[str] = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            raise InputError(f"empty item in levels {text!r}")
        if "-" in item:
            lo, _, hi = item.partition("-")
            a, b = ANATOMICAL_ORDER.index(_canonical(lo)), ANATOMICAL_ORDER.index(_canonical(hi))
            if a > b:
                raise InputError(
                    f"level range {item!r} runs upwards; write it cranial to caudal, "
                    f"e.g. {ANATOMICAL_ORDER[b]}-{ANATOMICAL_ORDER[a]}"
                )
            chosen.extend(ANATOMICAL_ORDER[a : b + 1])
        else:
            chosen.append(_canonical(item))
    order = {n: i for i, n in enumerate(ANATOMICAL_ORDER)}
    return tuple(LEVEL_TO_LABEL[n] for n in sorted(set(chosen), key=order.__getitem__))


def format_levels(labels: list[int] | tuple[int, ...]) -> str:
    """Compact text of VerSe labels in anatomical order, e.g. ``"T10-L2,L4"``."""
    order = {LEVEL_TO_LABEL[n]: i for i, n in enumerate(ANATOMICAL_ORDER)}
    idx = sorted({order[int(x)] for x in labels if int(x) in order})
    runs: list[str] = []
    start = prev = None
    for i in idx + [None]:  # type: ignore[list-item]
        if start is not None and (i is None or i != prev + 1):
            a, b = ANATOMICAL_ORDER[start], ANATOMICAL_ORDER[prev]
            runs.append(a if a == b else f"{a}-{b}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    return ",".join(runs)
