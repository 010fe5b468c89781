"""Run the ``uncol`` command line in a child process with the stand-in teacher in place of LiteMedSAM.

``python tests/uncol_with_fake_teacher.py teacher cache CONFIG ...`` (Python puts tests/ on the path,
so ``fake_teacher`` imports): the torchrun-style test starts one such process per rank, with RANK,
WORLD_SIZE and the rendezvous variables in its environment, exactly as torchrun would.
"""

from __future__ import annotations

import sys

from fake_teacher import FakeTeacher
from uncol import teachers
from uncol.cli import main
from uncol.config import TeacherConfig


def _fake(cfg: TeacherConfig) -> FakeTeacher:
    # The same stand-in as the use_fake fixture of tests/teachers/conftest.py.
    return FakeTeacher(size=64, token_grid=4, batch_size=cfg.batch_size)


if __name__ == "__main__":
    teachers.TEACHER_FACTORIES["litemedsam"] = _fake
    sys.exit(main(sys.argv[1:]))
