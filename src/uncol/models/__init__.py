"""Networks: the baselines' segmentation networks and the UnCoL student (docs/student.md)."""

from __future__ import annotations

from uncol.models.adapter import KnowledgeAdapter
from uncol.models.networks import build_network, count_parameters
from uncol.models.student import StudentOutput, UnCoLStudent
from uncol.models.vit import SimpleViT

__all__ = ["KnowledgeAdapter", "SimpleViT", "StudentOutput", "UnCoLStudent", "build_network", "count_parameters"]
