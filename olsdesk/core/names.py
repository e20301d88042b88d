"""Class names as the views show them: shortened one way for every class.

RadImageNet's 165 classes are paths of modality, anatomy and finding
(``MR/knee/bone_marrow_edema``). A view keeps the same trailing levels of every name,
the fewest that still tell all classes apart, so a heatmap never labels one class
``CT/abd/cyst`` and the next ``effusion``; names too long for the room keep their
leading levels and both ends of their last one. The full name goes in the tooltip.
"""

from __future__ import annotations

ELLIPSIS = "…"


def short_names(names: tuple[str, ...] | list[str], limit: int = 18) -> list[str]:
    """Each name at the same depth (finding; anatomy/finding; modality/anatomy/finding):
    the smallest that tells every class apart; over ``limit`` characters cut in the
    middle of the last level (``MR/knee/bon…_edema``), with the levels between cut short
    when they leave it no room (``MR/sho…/effusion``), else in the middle of the whole.
    Two classes never look alike: names their cut would confuse are kept whole."""
    parts = [name.split("/") for name in names]
    shown = list(names)
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        shown = ["/".join(p[-depth:]) for p in parts]
        if len(set(shown)) == len(shown):
            break
    cut = [_cut(s, limit) for s in shown]
    seen: dict[str, int] = {}
    for c in cut:
        seen[c] = seen.get(c, 0) + 1
    return [c if seen[c] == 1 else s for s, c in zip(shown, cut, strict=True)]


def _cut(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    head, _, last = name.rpartition("/")
    room = limit - len(head) - 1 if head else limit
    if head and room >= 5:  # the leading levels whole, the finding cut in its middle
        return f"{head}/{_middle(last, room)}"
    levels = head.split("/")
    if len(levels) >= 2:  # no room: the levels between modality and finding cut short
        head = "/".join([levels[0]] + [p if len(p) <= 4 else p[:3] + ELLIPSIS
                                       for p in levels[1:]])
        room = limit - len(head) - 1
        if room >= 5:
            return f"{head}/{last if len(last) <= room else _middle(last, room)}"
    return _middle(name, limit)


def _middle(text: str, limit: int) -> str:
    """``text`` in ``limit`` characters: a third from its start, the rest from its end."""
    keep = limit - 1
    start = keep // 3
    return text[:start] + ELLIPSIS + text[len(text) - (keep - start):]


def pair_name(true: str, predicted: str) -> str:
    """A confusion pair with its shared leading levels said once:
    ``US/spleen: normal → cyst``, ``CT/abd/cyst → MR/abd/cyst``."""
    a, b = true.split("/"), predicted.split("/")
    shared = 0
    while shared < min(len(a), len(b)) - 1 and a[shared] == b[shared]:
        shared += 1
    if not shared:
        return f"{true} → {predicted}"
    return f"{'/'.join(a[:shared])}: {'/'.join(a[shared:])} → {'/'.join(b[shared:])}"


def class_groups(names: tuple[str, ...] | list[str], level: int) -> tuple[list[str], list[int]]:
    """The classes' groups at ``level`` leading levels (1: modality, 2: modality/anatomy),
    in order of first appearance, and each class's group; a name with no more levels than
    that is grouped by its parent folder (``US/cyst`` under ``US`` by anatomy), a name
    with no folder by itself."""
    groups: dict[str, int] = {}
    of = []
    for name in names:
        parts = name.split("/")
        group = "/".join(parts[:level] if len(parts) > level else parts[:-1]) or name
        of.append(groups.setdefault(group, len(groups)))
    return list(groups), of
