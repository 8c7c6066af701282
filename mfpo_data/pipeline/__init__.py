"""The build, in reading order: `build.py` (build_dataset) -> `assemble.py` (the stage list of a recipe)
-> `run.py` (the ranks on datatrove's executor, `executors.py`; `watchdog.py`) -> `finalize.py`."""
