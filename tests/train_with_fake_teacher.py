"""``uncol`` in a child process with the stand-in teacher of tests/methods/test_uncol.py in place of LiteMedSAM.

``python -m torch.distributed.run ... tests/train_with_fake_teacher.py train CONFIG ...``: each rank
builds the teacher from the run's ``teacher.layers`` and ``teacher.token_grid``, as that test's
``fake_litemedsam`` fixture does in-process (tests/uncol_with_fake_teacher.py has a fixed layout).
"""

from __future__ import annotations

import sys

from fake_teacher import FakeTeacher
from uncol import teachers
from uncol.cli import main
from uncol.config import TeacherConfig


def _fake(cfg: TeacherConfig) -> FakeTeacher:
    return FakeTeacher(layers=cfg.layers, token_grid=cfg.token_grid, size=64)


if __name__ == "__main__":
    teachers.TEACHER_FACTORIES["litemedsam"] = _fake
    sys.exit(main(sys.argv[1:]))
