"""Packaging beyond ``pyproject.toml``: ``conf/`` ships inside the wheel as ``launch/conf``.

The configs stay at the top of the source tree (``conf/``, where users look
for them); the build maps that folder into the ``launch`` package, so an
installed launcher finds them beside its code
(:data:`launch.config.compose.CONF_DIR`).
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["distengine*", "launch*"], exclude=["*.__pycache__"]),
        "launch.conf",
    ],
    package_dir={"launch.conf": "conf"},
    package_data={"launch.conf": ["*.yaml", "*/*.yaml"]},
)
