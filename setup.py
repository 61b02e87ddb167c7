import os
from glob import glob

from setuptools import find_packages, setup

package_name = "regionadapt_ros"
share = "share/" + package_name


def bundle_data_files() -> list:
    """The shipped region bundles, one (destination, files) entry per bundle directory: installed next to
    config/, where config/regions.yaml's ``bundle_dir: ../bundles`` points. Dot files (a rollback state written
    by a local run) are not part of a bundle and stay out (glob skips them)."""
    entries = []
    for bundle in sorted(glob("bundles/*/")):
        files = sorted(f for f in glob(os.path.join(bundle, "*")) if os.path.isfile(f))
        if files:
            entries.append((os.path.join(share, os.path.normpath(bundle)), files))
    return entries


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    package_data={"regionadapt_ros.core.msgconv": ["msg/*.msg"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        (share, ["package.xml"]),
        (share + "/launch", glob("launch/*.launch.py")),
        (share + "/config", glob("config/*.yaml") + glob("config/*.geojson")),
        (share + "/config/keys", glob("config/keys/*.public.pem")),  # public halves only
        *bundle_data_files(),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="regionadapt_ros maintainers",
    maintainer_email="maintainers@regionadapt.dev",
    description="Region-adaptive driving networks for ROS 2 with hot-swapped regional bundles.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "driving_node = regionadapt_ros.nodes.driving_node:main",
            "region_manager_node = regionadapt_ros.nodes.region_manager_node:main",
            "regionadapt = regionadapt_ros.cli:main",
        ],
    },
)
