"""Procedural videos with known ground truth and the detector that reads it back.

Shared by the video experiments (StreamDiT, the autoregressive-video host in ``experiments/longlive``):
``clips`` draws coloured shapes that move, bounce, spin and occlude, with word prompts that can
switch mid-clip; ``detector`` finds each prompted object again by colour and states validity,
smoothness, motion, drift and prompt adherence against what real clips look like to it.
"""

from .clips import COLOURS, SHAPES, VOCAB, Clip, Switch, find_objects, make_clip, recoloured, tokens
from .detector import (
           Reference,
           aggregate,
           boundary_jump,
           detect,
           flicker,
           follows_prompt,
           frame_jump,
           frame_validity,
           frames_to_follow,
           score_video,
           track_breaks,
)

__all__ = ["COLOURS", "SHAPES", "VOCAB", "Clip", "Switch", "find_objects", "make_clip", "recoloured", "tokens",
           "Reference", "aggregate", "boundary_jump", "detect", "flicker", "follows_prompt", "frame_jump", "frame_validity", "frames_to_follow",
           "score_video", "track_breaks"]
