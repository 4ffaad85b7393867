"""Overlay builders, one module each, all ``build(conn, profile, **options) -> Schedule``.

The registry maps the names users type to builders; adding a design is one
module plus one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from fedsim.topologies.overlays import dmbst, matcha, mst, ring, star

OVERLAYS: dict[str, Callable] = {
    "star": star.build,
    "ring": ring.build,
    "mst": mst.build,
    "dmbst": dmbst.build,
    "matcha": matcha.build,
    "matcha_plus": matcha.build_plus,
}
