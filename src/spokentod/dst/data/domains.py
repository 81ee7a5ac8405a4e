"""Splitting dialogues by domain: source-only, target-only and mixed (the domain-transfer setting of the
DST reproduction study: train on source-domain speech, test on target-domain speech)."""

from __future__ import annotations

from collections.abc import Iterable

from spokentod.data.schema import Dialogue


def dialogue_domains(d: Dialogue) -> set[str]:
    """The union of the domains (with at least one slot) in the dialogue's user states."""
    return {dom for t in d.user_turns for dom, slots in (t.state or {}).items() if slots}


class DomainSplit(tuple):
    """Unpacks as ``(source_only, target_only, mixed)``; `no_domain` holds the dialogues whose states name
    no domain at all (they belong to no side), so that none disappears silently."""

    def __new__(cls, source: list, target: list, mixed: list, no_domain: list):
        self = super().__new__(cls, (source, target, mixed))
        self.no_domain = no_domain
        return self

    source = property(lambda self: self[0])
    target = property(lambda self: self[1])
    mixed = property(lambda self: self[2])


def split_by_domain(dialogues: Iterable[Dialogue], source: set[str], target: set[str]) -> DomainSplit:
    """Source-only if all of a dialogue's domains are in `source`, target-only if all are in `target`,
    else mixed (which includes dialogues touching a domain in neither set)."""
    source, target = set(source), set(target)
    if source & target:
        raise ValueError(f"source and target domains overlap: {sorted(source & target)}")
    src, tgt, mixed, none = [], [], [], []
    for d in dialogues:
        doms = dialogue_domains(d)
        (none if not doms else src if doms <= source else tgt if doms <= target else mixed).append(d)
    return DomainSplit(src, tgt, mixed, none)
