"""The Galaxy Zoo campaign schemas as data: questions, their answer columns, and which answer leads to each.

One entry per campaign, named as users know them (``galmo train --schema NAME``). Each entry is

* ``pairs``: question → the suffixes of its answer columns; a column is ``question + suffix``
  (``'smooth-or-featured-dr5' + '_smooth'``), the convention of galaxy-datasets / zoobot
  (``galaxy_datasets.shared.label_metadata``: the "ortho" schemas, one suffix per campaign so that
  votes of different campaigns never share a column). The column names are facts copied from there
  (``tests/test_schema.py`` checks them against a copy of their lists).
* ``dependencies``: question → the answer column whose volunteers were asked it (None: everyone).
  Questions galaxy-datasets lists in its dependencies but not in its answer pairs are left out.
* ``votes``: how a catalog stores them: ``counts`` (volunteers per answer, galaxy-datasets) or
  ``cumulative`` fractions (the Kaggle GZ2 table, Willett et al. 2013).
* optional ``text`` (question → wording) and ``answer_text`` (question → one label per answer).

:mod:`galmo.core.schema` turns these into :class:`~galmo.core.schema.Schema` objects. No imports:
plain dicts and tuples.
"""

from __future__ import annotations

_KAGGLE_PAIRS = {f"Class{q}": tuple(f".{k + 1}" for k in range(n))
                 for q, n in zip(range(1, 12), (3, 2, 2, 2, 4, 2, 3, 7, 3, 3, 6))}

GZ2_KAGGLE = {
    "title": "Galaxy Zoo 2, Kaggle Galaxy Challenge table (Willett et al. 2013): 11 questions, 37 answers",
    "votes": "cumulative",
    "pairs": _KAGGLE_PAIRS,
    "dependencies": {"Class1": None, "Class2": "Class1.2", "Class3": "Class2.2", "Class4": "Class2.2",
                     "Class5": "Class2.2", "Class6": None, "Class7": "Class1.1", "Class8": "Class6.1",
                     "Class9": "Class2.1", "Class10": "Class4.1", "Class11": "Class4.1"},
    "text": {
        "Class1": "Is the galaxy simply smooth and rounded, with no sign of a disk?",
        "Class2": "Could this be a disk viewed edge-on?",
        "Class3": "Is there a sign of a bar feature through the centre of the galaxy?",
        "Class4": "Is there any sign of a spiral arm pattern?",
        "Class5": "How prominent is the central bulge, compared with the rest of the galaxy?",
        "Class6": "Is there anything odd?",  # asked of everyone; in the Kaggle data its answers sum to 1
        "Class7": "How rounded is it?",
        "Class8": "Is the odd feature a ring, or is the galaxy disturbed or irregular?",
        "Class9": "Does the galaxy have a bulge at its centre? If so, what shape?",
        "Class10": "How tightly wound do the spiral arms appear?",
        "Class11": "How many spiral arms are there?",
    },
    "answer_text": {
        "Class1": ("smooth", "features or disk", "star or artifact"), "Class2": ("yes", "no"),
        "Class3": ("bar", "no bar"), "Class4": ("spiral", "no spiral"),
        "Class5": ("no bulge", "just noticeable", "obvious", "dominant"), "Class6": ("yes", "no"),
        "Class7": ("completely round", "in between", "cigar-shaped"),
        "Class8": ("ring", "lens or arc", "disturbed", "irregular", "other", "merger", "dust lane"),
        "Class9": ("rounded", "boxy", "no bulge"), "Class10": ("tight", "medium", "loose"),
        "Class11": ("1", "2", "3", "4", "more than four", "can't tell"),
    },
}

GZ2 = {
    "title": "Galaxy Zoo 2 (Willett et al. 2013), galaxy-datasets' vote counts",
    "votes": "counts",
    "pairs": {
        "smooth-or-featured-gz2": ("_smooth", "_featured-or-disk", "_artifact"),
        "disk-edge-on-gz2": ("_yes", "_no"),
        "has-spiral-arms-gz2": ("_yes", "_no"),
        "bar-gz2": ("_yes", "_no"),
        "bulge-size-gz2": ("_dominant", "_obvious", "_just-noticeable", "_no"),
        "something-odd-gz2": ("_yes", "_no"),
        "how-rounded-gz2": ("_round", "_in-between", "_cigar"),
        "bulge-shape-gz2": ("_round", "_boxy", "_no-bulge"),
        "spiral-winding-gz2": ("_tight", "_medium", "_loose"),
        "spiral-arm-count-gz2": ("_1", "_2", "_3", "_4", "_more-than-4", "_cant-tell"),
    },
    "dependencies": {
        "smooth-or-featured-gz2": None,
        "disk-edge-on-gz2": "smooth-or-featured-gz2_featured-or-disk",
        "has-spiral-arms-gz2": "smooth-or-featured-gz2_featured-or-disk",
        "bar-gz2": "smooth-or-featured-gz2_featured-or-disk",
        "bulge-size-gz2": "smooth-or-featured-gz2_featured-or-disk",
        "something-odd-gz2": None,
        "how-rounded-gz2": "smooth-or-featured-gz2_smooth",
        "bulge-shape-gz2": "disk-edge-on-gz2_yes",
        "spiral-winding-gz2": "has-spiral-arms-gz2_yes",
        "spiral-arm-count-gz2": "has-spiral-arms-gz2_yes",
    },
}

_DECALS_DR5_PAIRS = {
    "smooth-or-featured": ("_smooth", "_featured-or-disk", "_artifact"),
    "disk-edge-on": ("_yes", "_no"),
    "has-spiral-arms": ("_yes", "_no"),
    "bar": ("_strong", "_weak", "_no"),
    "bulge-size": ("_dominant", "_large", "_moderate", "_small", "_none"),
    "how-rounded": ("_round", "_in-between", "_cigar-shaped"),
    "edge-on-bulge": ("_boxy", "_none", "_rounded"),
    "spiral-winding": ("_tight", "_medium", "_loose"),
    "spiral-arm-count": ("_1", "_2", "_3", "_4", "_more-than-4", "_cant-tell"),
    "merging": ("_none", "_minor-disturbance", "_major-disturbance", "_merger"),
}
_DECALS_DR12_PAIRS = {
    "smooth-or-featured": ("_smooth", "_featured-or-disk", "_artifact"),
    "disk-edge-on": ("_yes", "_no"),
    "has-spiral-arms": ("_yes", "_no"),
    "bar": ("_yes", "_no"),
    "bulge-size": ("_dominant", "_obvious", "_none"),
    "how-rounded": ("_completely", "_in-between", "_cigar-shaped"),
    "edge-on-bulge": ("_boxy", "_none", "_rounded"),
    "spiral-winding": ("_tight", "_medium", "_loose"),
    "spiral-arm-count": ("_1", "_2", "_3", "_4", "_more-than-4"),
    "merging": ("_neither", "_tidal-debris", "_both", "_merger"),
}
_DECALS_DEPENDENCIES = {  # the same tree for DR1/2, DR5 and DR8
    "smooth-or-featured": None,
    "disk-edge-on": "smooth-or-featured_featured-or-disk",
    "has-spiral-arms": "disk-edge-on_no",
    "bar": "disk-edge-on_no",
    "bulge-size": "disk-edge-on_no",
    "how-rounded": "smooth-or-featured_smooth",
    "edge-on-bulge": "disk-edge-on_yes",
    "spiral-winding": "has-spiral-arms_yes",
    "spiral-arm-count": "has-spiral-arms_yes",
    "merging": None,
}

_HUBBLE_PAIRS = {
    "smooth-or-featured": ("_smooth", "_features", "_artifact"),
    "how-rounded": ("_completely", "_in-between", "_cigar-shaped"),
    "clumpy-appearance": ("_yes", "_no"),
    "clump-count": ("_1", "_2", "_3", "_4", "_5-plus", "_cant-tell"),
    "disk-edge-on": ("_yes", "_no"),
    "bulge-shape": ("_rounded", "_boxy", "_none"),
    "bar": ("_yes", "_no"),
    "has-spiral-arms": ("_yes", "_no"),
    "spiral-winding": ("_tight", "_medium", "_loose"),
    "spiral-arm-count": ("_1", "_2", "_3", "_4", "_5-plus", "_cant-tell"),
    "bulge-size": ("_none", "_just-noticeable", "_obvious", "_dominant"),
    "galaxy-symmetrical": ("_yes", "_no"),
    "clumps-embedded-larger-object": ("_yes", "_no"),
}
_HUBBLE_DEPENDENCIES = {
    "smooth-or-featured": None,
    "how-rounded": "smooth-or-featured_smooth",
    "clumpy-appearance": "smooth-or-featured_features",
    "clump-count": "clumpy-appearance_yes",
    "galaxy-symmetrical": "clumpy-appearance_yes",
    "clumps-embedded-larger-object": "clumpy-appearance_yes",
    "disk-edge-on": "clumpy-appearance_no",
    "bulge-shape": "disk-edge-on_yes",
    "bar": "disk-edge-on_no",
    "has-spiral-arms": "disk-edge-on_no",
    "spiral-winding": "disk-edge-on_no",
    "spiral-arm-count": "disk-edge-on_no",
    "bulge-size": "disk-edge-on_no",
}

_CANDELS_PAIRS = {
    "smooth-or-featured": ("_smooth", "_features", "_artifact"),
    "how-rounded": ("_completely", "_in-between", "_cigar-shaped"),
    "clumpy-appearance": ("_yes", "_no"),
    "clump-count": ("_1", "_2", "_3", "_4", "_5-plus", "_cant-tell"),
    "disk-edge-on": ("_yes", "_no"),
    "edge-on-bulge": ("_yes", "_no"),
    "bar": ("_yes", "_no"),
    "has-spiral-arms": ("_yes", "_no"),
    "spiral-winding": ("_tight", "_medium", "_loose"),
    "spiral-arm-count": ("_1", "_2", "_3", "_4", "_5-plus", "_cant-tell"),
    "bulge-size": ("_none", "_obvious", "_dominant"),
    "merging": ("_merger", "_tidal-debris", "_both", "_neither"),
}
_CANDELS_DEPENDENCIES = {
    "smooth-or-featured": None,
    "how-rounded": "smooth-or-featured_smooth",
    "clumpy-appearance": "smooth-or-featured_features",
    "clump-count": "clumpy-appearance_yes",
    "disk-edge-on": "clumpy-appearance_no",
    "edge-on-bulge": "disk-edge-on_yes",
    "bar": "disk-edge-on_no",
    "has-spiral-arms": "disk-edge-on_no",
    "spiral-winding": "disk-edge-on_no",
    "spiral-arm-count": "disk-edge-on_no",
    "bulge-size": "disk-edge-on_no",
    "merging": None,
}


def _campaign(title: str, pairs: dict, dependencies: dict, tag: str) -> dict:
    """A counts schema whose questions carry the campaign tag (``'bar'`` → ``'bar-dr5'``)."""
    def tagged(name):
        return None if name is None else name.replace("_", f"-{tag}_", 1) if "_" in name else f"{name}-{tag}"

    return {"title": title, "votes": "counts",
            "pairs": {tagged(q): a for q, a in pairs.items()},
            "dependencies": {tagged(q): tagged(d) for q, d in dependencies.items()}}


SCHEMAS: dict[str, dict] = {
    "gz2-kaggle": GZ2_KAGGLE,
    "gz2": GZ2,
    "decals-dr12": _campaign("Galaxy Zoo DECaLS, DR1/2 campaign (Walmsley et al. 2022)", _DECALS_DR12_PAIRS,
                             _DECALS_DEPENDENCIES, "dr12"),
    "decals-dr5": _campaign("Galaxy Zoo DECaLS, DR5 campaign (Walmsley et al. 2022)", _DECALS_DR5_PAIRS,
                            _DECALS_DEPENDENCIES, "dr5"),
    "decals-dr8": _campaign("Galaxy Zoo DECaLS, DR8 campaign (the DR5 questions)", _DECALS_DR5_PAIRS,
                            _DECALS_DEPENDENCIES, "dr8"),
    "hubble": _campaign("Galaxy Zoo: Hubble (Willett et al. 2017)", _HUBBLE_PAIRS, _HUBBLE_DEPENDENCIES, "hubble"),
    "candels": _campaign("Galaxy Zoo: CANDELS (Simmons et al. 2017)", _CANDELS_PAIRS, _CANDELS_DEPENDENCIES,
                         "candels"),
}
SCHEMA_NAMES: tuple[str, ...] = tuple(SCHEMAS)
