"""Moved to wgpy.host.privileges; kept only for uapi/server.py and cli.py until they import it from there."""

from .host.privileges import *  # noqa: F401,F403
