"""The CFOR ontology (region -> category -> attribute groups) and the coarse-to-fine decision.

The lowest of the CFOR modules: the task (:mod:`fedsim.clients.cfor`) and the
retrieval index (:mod:`fedsim.clients.cfor.retrieval`) both build on it.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedsim.errors import FedsimError


DEFAULT_ONTOLOGY = Path(__file__).parent / "ontology.toml"


# =============================================================== ontology
@dataclass(frozen=True)
class AttributeGroup:
    """One local attribute group: its attributes and (optional) generator priors."""

    name: str
    attributes: tuple[str, ...]
    concept: str = ""
    draw: str = "any"
    prior: tuple[float, ...] = ()
    extra: float = 0.0
    exclusive: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Ontology:
    """Region → category → attribute-group ontology.

    Examples
    --------
    >>> onto = load_ontology()
    >>> onto.regions, onto.n_categories, onto.n_attributes
    (('top', 'bottom', 'body'), 8, 32)
    >>> onto.category_names[onto.category_offsets[1]], onto.groups[0].name
    ('trousers', 'color')
    """

    name: str
    regions: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    groups: tuple[AttributeGroup, ...]
    category_names: tuple[str, ...] = field(init=False)
    category_region: tuple[int, ...] = field(init=False)
    category_offsets: tuple[int, ...] = field(init=False)
    attribute_names: tuple[str, ...] = field(init=False)
    group_slices: tuple[slice, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.regions or len(self.regions) != len(self.categories):
            raise FedsimError(f"ontology {self.name!r}: every region needs a list of categories")
        if any(not c for c in self.categories) or not self.groups:
            raise FedsimError(f"ontology {self.name!r}: empty region or no attribute groups")
        names = [c for cats in self.categories for c in cats]
        attrs = [a for g in self.groups for a in g.attributes]
        for kind, items in (("region", self.regions), ("category", names), ("attribute", attrs),
                            ("group", [g.name for g in self.groups])):
            dup = sorted({x for x in items if items.count(x) > 1})
            if dup:
                raise FedsimError(f"ontology {self.name!r}: duplicate {kind} name(s) {dup}")
        offsets = np.cumsum([0] + [len(c) for c in self.categories])
        slices, start = [], 0
        for g in self.groups:
            if not g.attributes:
                raise FedsimError(f"ontology {self.name!r}: attribute group {g.name!r} is empty")
            slices.append(slice(start, start + len(g.attributes)))
            start += len(g.attributes)
        set_ = object.__setattr__
        set_(self, "category_names", tuple(names))
        set_(self, "category_region", tuple(r for r, cats in enumerate(self.categories) for _ in cats))
        set_(self, "category_offsets", tuple(int(o) for o in offsets[:-1]))
        set_(self, "attribute_names", tuple(attrs))
        set_(self, "group_slices", tuple(slices))

    @property
    def n_regions(self) -> int:
        return len(self.regions)

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    @property
    def n_attributes(self) -> int:
        return len(self.attribute_names)

    def leaf(self, category: int) -> tuple[str, str]:
        """The (region, category) names of a global category index: an ontology leaf."""
        return self.regions[self.category_region[category]], self.category_names[category]

    def to_dict(self) -> dict:
        """The ontology in the file format (JSON/TOML-serialisable)."""
        groups = []
        for g in self.groups:
            d: dict = {"name": g.name, "attributes": list(g.attributes), "draw": g.draw}
            if g.concept:
                d["concept"] = g.concept
            if g.prior:
                d["prior"] = list(g.prior)
            if g.extra:
                d["extra"] = g.extra
            if g.exclusive:
                d["exclusive"] = [list(p) for p in g.exclusive]
            groups.append(d)
        return {"name": self.name,
                "region": [{"name": r, "categories": list(c)} for r, c in zip(self.regions, self.categories)],
                "group": groups}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Ontology:
        """Build from the file structure (``name``, ``region`` list, ``group`` list)."""
        try:
            regions = [(str(r["name"]), tuple(str(c) for c in r["categories"])) for r in data["region"]]
            groups = []
            for g in data["group"]:
                attrs = tuple(str(a) for a in g["attributes"])
                prior = tuple(float(p) for p in g.get("prior", ()))
                draw = str(g.get("draw", "any"))
                if draw not in ("one", "any"):
                    raise FedsimError(f"{source}: group {g['name']!r} draw must be 'one' or 'any', got {draw!r}")
                if prior and len(prior) != len(attrs):
                    raise FedsimError(f"{source}: group {g['name']!r} has {len(attrs)} attributes "
                                      f"but {len(prior)} prior values")
                excl = tuple((str(a), str(b)) for a, b in g.get("exclusive", ()))
                for pair in excl:
                    if not set(pair) <= set(attrs):
                        raise FedsimError(f"{source}: group {g['name']!r} exclusive pair {list(pair)} "
                                          f"names unknown attributes; valid: {', '.join(attrs)}")
                groups.append(AttributeGroup(str(g["name"]), attrs, str(g.get("concept", "")), draw,
                                             prior, float(g.get("extra", 0.0)), excl))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, FedsimError):
                raise
            raise FedsimError(f"{source}: not a CFOR ontology (need name, [[region]] name+categories, "
                              f"[[group]] name+attributes): {exc!r}") from None
        return cls(str(data.get("name", Path(source).stem)), tuple(r for r, _ in regions),
                   tuple(c for _, c in regions), tuple(groups))


def load_ontology(path: str | Path | None = None) -> Ontology:
    """Load an ontology from a ``.toml`` or ``.json`` file (default: the packaged one)."""
    p = Path(path) if path else DEFAULT_ONTOLOGY
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise FedsimError(f"cannot read ontology file {p}: {exc.strerror}") from None
    try:
        data = json.loads(raw) if p.suffix.lower() == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise FedsimError(f"ontology file {p} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: "
                          f"{exc}") from None
    return Ontology.from_dict(data, str(p))


# =============================================================== losses


def predict_stages(out, onto: Ontology) -> tuple:
    """Coarse-to-fine prediction from a :class:`~fedsim.clients.cfor.model.CFOROutput`: region = argmax of the region classifier, then the
    category = argmax of *that region's* category classifier (global index)."""
    import torch  # lazily: the ontology alone (and the CLI) need no torch

    region = out.region.argmax(1)
    category = torch.empty_like(region)
    for r, logits in enumerate(out.category):
        m = region == r
        category[m] = logits[m].argmax(1) + onto.category_offsets[r]
    return region, category
