"""StorPool's official Python bindings (`storpool` on PyPI), imported in one place.

The bindings print "simplejson unavailable, fall-back to standard python json" to stderr when
imported without simplejson; that line is noise in a service log, so the import captures it.
"""

from __future__ import annotations

import contextlib
import io

with contextlib.redirect_stderr(io.StringIO()):
    from storpool import spapi, spcatch, spconfig, sptypes

__all__ = ["spapi", "spcatch", "spconfig", "sptypes"]
