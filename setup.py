"""Package set-up read from settings.ini (nbdev 2's convention: dependencies are declared there, once)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

config = ConfigParser(delimiters=["="])
config.read(Path(__file__).parent / "settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    author=cfg["author"],
    license=cfg["license"],
    python_requires=">=" + cfg["min_python"],
    packages=setuptools.find_packages(include=["aacnb", "aacnb.*"]),
    package_data={"aacnb": ["profiles/*.yaml", "data/*"]},
    include_package_data=True,
    install_requires=cfg["requirements"].split(),
    extras_require={"dev": cfg["dev_requirements"].split(), "faiss": cfg["faiss_requirements"].split()},
    entry_points={"console_scripts": cfg["console_scripts"].split()},
    zip_safe=False,
)
