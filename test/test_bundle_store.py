"""regions.yaml → bundles: start-up validation, delta resolution against the base, rollback protection."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from test_bundle_support import SHAPES, architectures, random_weights, write_base, write_head_delta

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core import signing
from regionadapt_ros.core.bundle_store import BundleStore
from regionadapt_ros.core.errors import BundleError, ConfigError

REPO = Path(__file__).resolve().parents[1]
PRODUCT_REGIONS = ("base", "urban_day", "urban_night", "highway", "mountain", "left_hand")


def _config(regions: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"default_region": "base", "bundle_dir": "bundles", "require_signatures": False,
                           "trusted_keys": [], "allow_rollback": False,
                           "regions": regions or {
                               "base": {"bundle": "base", "rules": {"speed_limit_kph": 50, "driving_side": "right"}},
                               "highway": {"bundle": "highway", "rules": {"speed_limit_kph": 110}},
                           }}
    doc.update(top)
    return doc


def _write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    """A bundle_dir with a base bundle and a highway delta bundle (v5), and a regions.yaml pointing at them."""
    bundles = tmp_path / "bundles"
    _, base = write_base(bundles / "base")
    _, stored = write_head_delta(bundles / "highway", base, version=5)
    return {"config": _write_config(tmp_path, _config()), "base": base, "stored": stored, "bundles": bundles}


def test_store_resolves_paths_relative_to_the_yaml_and_returns_rules(setup: dict[str, Any]) -> None:
    store = BundleStore.load(setup["config"], geofence_regions={"highway"})
    assert store.regions == ("base", "highway")
    assert store.default_region == "base"
    assert store.bundle_path("highway") == setup["bundles"] / "highway"
    assert store.rules("highway") == {"speed_limit_kph": 110}
    assert store.rules("base")["driving_side"] == "right"
    assert store.state_file == setup["bundles"] / ".installed.json"
    with pytest.raises(ConfigError, match=r"regions\.yaml: unknown region 'moon'"):
        store.rules("moon")


def test_store_loads_a_delta_region_on_the_base(setup: dict[str, Any]) -> None:
    store = BundleStore.load(setup["config"], geofence_regions={"highway"})
    region = store.load("highway", architectures())
    assert region.region == "highway" and region.bundle_version == 5
    assert region.bundle_id.startswith("highway@v5:")
    np.testing.assert_array_equal(region.weights["perception"]["head.weight"],
                                  setup["stored"]["perception"]["head.weight"])
    np.testing.assert_array_equal(region.weights["perception"]["stem.weight"],
                                  setup["base"]["perception"]["stem.weight"])
    np.testing.assert_array_equal(region.weights["decision"]["fc1.weight"], setup["stored"]["decision"]["fc1.weight"])
    base = store.base_weights()
    assert store.base_weights() is base  # loaded once
    assert set(base) == set(SHAPES)


def test_the_repository_regions_yaml_describes_the_product_regions(tmp_path: Path) -> None:
    config = REPO / "config" / "regions.yaml"
    store = BundleStore.load(config, require_bundles=False)
    assert store.regions == PRODUCT_REGIONS
    assert store.default_region == "base" and store.base_region == "base"
    assert store.bundle_dir.resolve() == (REPO / "bundles").resolve()
    assert not store.require_signatures and not store.allow_rollback
    assert store.rules("highway") == {"speed_limit_kph": 110, "driving_side": "right", "ttc_warn_s": 3.5}
    assert store.rules("left_hand") == {"speed_limit_kph": 40, "driving_side": "left"}
    assert store.rules("mountain")["speed_limit_kph"] == 60 and 0 < store.rules("mountain")["curve_speed_factor"] < 1
    for region in ("urban_day", "urban_night"):
        assert store.rules(region) == {"speed_limit_kph": 50, "driving_side": "right"}
    # With bundles present the same file validates against geofences for every region but the default.
    bundles = tmp_path / "bundles"
    _, base = write_base(bundles / "base")
    for region in PRODUCT_REGIONS[1:]:
        write_head_delta(bundles / region, base, region=region)
    # The region ids of the product's geofence file: every region but the default must have a fence.
    geojson = json.loads((REPO / "config" / "geofences.geojson").read_text())
    fenced = {feature["properties"]["region"] for feature in geojson["features"]}
    assert fenced == set(PRODUCT_REGIONS[1:])
    store = BundleStore.load(config, geofence_regions=fenced, bundle_dir=bundles, state_file=tmp_path / "state.json")
    assert store.load("left_hand", architectures()).region == "left_hand"


# ------------------------------------------------------------------------------------- start-up validation


def test_region_without_a_geofence_is_refused(setup: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"regions\.yaml: region 'highway' has no geofence") as info:
        BundleStore.load(setup["config"], geofence_regions={"urban_day"})
    assert info.value.path == str(setup["config"])


def test_geofence_region_without_an_entry_is_refused(setup: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"regions\.yaml: region 'mountain' has a geofence but no entry"):
        BundleStore.load(setup["config"], geofence_regions={"highway", "mountain"})


def test_region_whose_bundle_directory_is_missing_is_refused(setup: dict[str, Any]) -> None:
    shutil.rmtree(setup["bundles"] / "highway")
    with pytest.raises(ConfigError, match=r"regions\.yaml: region 'highway': bundle directory .*highway does not "
                       "exist"):
        BundleStore.load(setup["config"])


def test_region_with_no_bundle_is_refused(tmp_path: Path, setup: dict[str, Any]) -> None:
    doc = _config({"base": {"bundle": "base"}, "highway": {"rules": {"speed_limit_kph": 110}}})
    with pytest.raises(ConfigError, match=r"regions\.yaml: region 'highway' has no bundle"):
        BundleStore.load(_write_config(tmp_path, doc))


@pytest.mark.parametrize(("change", "message"), [
    ({"require_signature": True}, r"unknown key\(s\) \['require_signature'\]"),
    ({"default_region": "city"}, r"default_region 'city' must be one of the regions"),
    ({"allow_rollback": "yes"}, r"allow_rollback must be true or false"),
    ({"require_signatures": True}, r"require_signatures is true but no trusted_keys are configured"),
    ({"regions": {"base": {"bundle": "base", "rules": {"driving_side": "middle"}}}},
     r"region 'base': rules\.driving_side must be one of right, left"),
    ({"regions": {"base": {"bundle": "base", "rules": {"speed_limit_kph": -5}}}},
     r"region 'base': rules\.speed_limit_kph must be > 0"),
    ({"regions": {"base": {"bundle": "base", "rules": {"curve_speed_factor": 1.5}}}},
     r"region 'base': rules\.curve_speed_factor must be in \(0, 1\]"),
    ({"regions": {"base": {"bundle": "base", "speed": 3}}}, r"region 'base': unknown key\(s\) \['speed'\]"),
    ({"regions": {"base": {"bundle": "base", "rules": []}}}, r"region 'base': rules must be a mapping, not \[\]"),
    ({"regions": {"base": {"bundle": "base", "rules": False}}},
     r"region 'base': rules must be a mapping, not False"),
])
def test_bad_configuration_values_are_refused(tmp_path: Path, setup: dict[str, Any], change: dict[str, Any],
                                              message: str) -> None:
    with pytest.raises(ConfigError, match=r"regions\.yaml: " + message):
        BundleStore.load(_write_config(tmp_path, _config(**change)))


def test_unreadable_yaml_and_missing_trusted_key_are_refused(tmp_path: Path, setup: dict[str, Any]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("regions: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        BundleStore.load(broken)
    with pytest.raises(ConfigError, match=r"fleet\.public\.pem: cannot read key file"):
        BundleStore.load(_write_config(tmp_path, _config(trusted_keys=["keys/fleet.public.pem"])))


# ------------------------------------------------------------------------------------------ signatures


def test_store_with_required_signatures_accepts_only_signed_bundles(tmp_path: Path, setup: dict[str, Any]) -> None:
    private_path, _, key = signing.generate_keypair(tmp_path / "keys", "fleet")
    config = _write_config(tmp_path, _config(require_signatures=True, trusted_keys=["keys/fleet.public.pem"]))
    store = BundleStore.load(config)
    with pytest.raises(BundleError, match=r"highway/signature\.json: missing: the bundle is unsigned"):
        store.load("highway", architectures())
    bundle_io.sign_bundle(setup["bundles"] / "highway", private_path)
    with pytest.raises(BundleError, match=r"base/signature\.json: missing"):
        store.load("highway", architectures())  # the base it resolves on must be signed too
    bundle_io.sign_bundle(setup["bundles"] / "base", private_path)
    assert store.load("highway", architectures()).signature_state == f"verified (key {key})"


def test_bundle_for_another_region_is_refused(tmp_path: Path, setup: dict[str, Any]) -> None:
    shutil.rmtree(setup["bundles"] / "highway")
    write_head_delta(setup["bundles"] / "highway", setup["base"], region="mountain")
    store = BundleStore.load(setup["config"])
    with pytest.raises(BundleError, match=r"highway/manifest\.json: bundle is for region 'mountain' but "
                       r"regions\.yaml maps region 'highway' to it"):
        store.load("highway", architectures())


def test_base_bundle_that_is_a_delta_is_refused(tmp_path: Path, setup: dict[str, Any]) -> None:
    shutil.rmtree(setup["bundles"] / "base")
    write_head_delta(setup["bundles"] / "base", setup["base"], region="base")
    store = BundleStore.load(setup["config"])
    with pytest.raises(BundleError, match=r"base/manifest\.json: the base bundle \(region 'base'\) must hold full"):
        store.load("highway", architectures())


# ---------------------------------------------------------------------------------- rollback protection


def _replace_highway(setup: dict[str, Any], version: int) -> None:
    shutil.rmtree(setup["bundles"] / "highway")
    write_head_delta(setup["bundles"] / "highway", setup["base"], version=version, seed=version)


def test_older_bundle_version_is_refused(setup: dict[str, Any]) -> None:
    store = BundleStore.load(setup["config"])
    store.load("highway", architectures())
    assert store.installed_versions() == {"base": 1, "highway": 5}
    _replace_highway(setup, 3)
    with pytest.raises(BundleError) as info:
        store.load("highway", architectures())
    assert str(info.value).endswith("manifest.json: bundle_version 3 is older than installed version 5 for region "
                                    "'highway'; set allow_rollback to accept")
    # The record is on disk: a restarted process refuses the rollback too.
    with pytest.raises(BundleError, match="older than installed version 5"):
        BundleStore.load(setup["config"]).load("highway", architectures())


def test_same_or_newer_version_is_accepted_and_recorded(setup: dict[str, Any]) -> None:
    store = BundleStore.load(setup["config"])
    store.load("highway", architectures())
    store.load("highway", architectures())  # reloading the installed version is not a rollback
    _replace_highway(setup, 8)
    store.load("highway", architectures())
    record = json.loads(store.state_file.read_text())
    assert record["schema_version"] == 1
    assert record["regions"]["highway"]["bundle_version"] == 8
    assert record["regions"]["highway"]["bundle_id"].startswith("highway@v8:")


def test_allow_rollback_accepts_an_older_version_and_keeps_the_highest_record(setup: dict[str, Any]) -> None:
    BundleStore.load(setup["config"]).load("highway", architectures())
    _replace_highway(setup, 2)
    store = BundleStore.load(setup["config"], allow_rollback=True)
    assert store.load("highway", architectures()).bundle_version == 2
    assert store.installed_versions()["highway"] == 5


def test_corrupt_installed_version_registry_fails_at_start_up(setup: dict[str, Any]) -> None:
    (setup["bundles"] / ".installed.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"\.installed\.json: installed-version registry: not valid JSON"):
        BundleStore.load(setup["config"])


def test_failed_load_records_nothing(setup: dict[str, Any]) -> None:
    store = BundleStore.load(setup["config"])
    (setup["bundles"] / "highway" / "decision.safetensors").write_bytes(b"x")
    with pytest.raises(BundleError, match="is 1 B but the manifest lists"):
        store.load("highway", architectures())
    assert "highway" not in store.installed_versions()


def test_concurrent_loads_keep_a_consistent_registry(tmp_path: Path) -> None:
    bundles = tmp_path / "bundles"
    _, base = write_base(bundles / "base")
    regions = {"base": {"bundle": "base"}}
    for index in range(4):
        write_head_delta(bundles / f"r{index}", base, region=f"r{index}", version=index + 1)
        regions[f"r{index}"] = {"bundle": f"r{index}"}
    store = BundleStore.load(_write_config(tmp_path, _config(regions)))
    errors: list[BaseException] = []

    def worker(region: str) -> None:
        try:
            store.load(region, architectures())
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"r{i % 4}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.installed_versions() == {"base": 1, "r0": 1, "r1": 2, "r2": 3, "r3": 4}


def test_explicit_base_weights_bypass_the_store_base(setup: dict[str, Any]) -> None:
    store = BundleStore.load(setup["config"])
    with pytest.raises(BundleError, match="does not match the base weights"):
        store.load("highway", architectures(), base_weights=random_weights(42))
