"""Moved to wgpy.host.privileges; kept only for uapi/server.py (`from .. import privileges`) until it imports
wgpy.host.privileges instead, then delete this file."""

from .host.privileges import *  # noqa: F401,F403
