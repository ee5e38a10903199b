"""Models and checkpoints used by both stages: loading classifiers, reading checkpoints safely, devices.

Neutral ground below ``offline`` and ``metrics``: both import it, it imports neither.
"""
