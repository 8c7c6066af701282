"""Publishing a build: the checks and split (`publish`), the dataset card (`card`), other trainers' formats
(`export`), and the `mfpo-data publish` command (`cli`).
"""
