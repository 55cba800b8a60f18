"""Exceptions that carry a message meant for the user."""


class GCDError(ValueError):
    """Bad input or an impossible request; the message names the problem and, where it can, the fix."""


class VoxelCollisionError(GCDError):
    """Two atoms fall into one voxel, so the grid cannot hold them both."""
