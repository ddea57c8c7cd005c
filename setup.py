"""Package layout: every package under harness/ and methods/ (found, not listed), and the
top-level configs/ folder shipped inside the wheel as harness/configs/, where an installed
harness finds it (harness/config.py), and references/ (published numbers) as harness/references/
(harness/report/published.py). Metadata and dependencies are in pyproject.toml.

configs/ stays at the top of the checkout (README paths, the layout that shows the
architecture); pyproject.toml cannot map one folder into another package, hence this file.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["harness", "harness.*", "methods", "methods.*"]),
        "harness.configs",
        "harness.references",
    ],
    package_dir={"harness.configs": "configs", "harness.references": "references"},
    package_data={"harness.configs": ["*.yaml", "**/*.yaml"], "harness.references": ["*.yaml"]},
)
