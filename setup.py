from glob import glob

from setuptools import find_packages, setup

package_name = "regionadapt_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    package_data={"regionadapt_ros.core.msgconv": ["msg/*.msg"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.geojson")),
        ("share/" + package_name + "/config/keys", glob("config/keys/*.public.pem")),  # public halves only
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
