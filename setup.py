"""Ship `recipes/` inside the wheel as `mfpo_data/recipes/`, so `mfpo-data build --recipe coco` works
from a plain `pip install` as well as from a checkout (where `mfpo_data.config` finds `recipes/`)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithRecipes(build_py):
    def run(self):
        super().run()
        source = Path(__file__).resolve().parent / "recipes"
        target = Path(self.build_lib) / "mfpo_data" / "recipes"
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithRecipes})
