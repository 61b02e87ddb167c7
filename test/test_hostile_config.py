"""Hostile configuration and vehicle state: regions.yaml, the rollback registry, key files (DESIGN.md §7). Each
bad input fails at start-up with the file and the problem; no trusted-key set-up is talked out of its keys by
deleting or copying a file."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from mutations import mutations
from test_bundle_support import architectures, write_base, write_head_delta
from test_hostile_bundles import call_guarded, needs_fifo, release_fifo

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core import signing
from regionadapt_ros.core.bundle_store import BundleStore
from regionadapt_ros.core.errors import BundleError, ConfigError


def _doc(**top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"default_region": "base", "bundle_dir": "bundles", "allow_rollback": False,
                           "regions": {"base": {"bundle": "base"}, "highway": {"bundle": "highway"}}}
    doc.update(top)
    return doc


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    root = tmp_path / "bundles"
    _, base = write_base(root / "base")
    write_head_delta(root / "highway", base, version=5)
    return root


@pytest.fixture
def signed(tmp_path: Path, bundles: Path) -> dict[str, Path]:
    """Both bundles signed, and the key pair."""
    private, public, _ = signing.generate_keypair(tmp_path / "keys", "fleet")
    for region in ("base", "highway"):
        bundle_io.sign_bundle(bundles / region, private)
    return {"private": private, "public": public}


def write_yaml(tmp_path: Path, doc: dict[str, Any], name: str = "regions.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


# ---------------------------------------------------------------------------------------------- regions.yaml


def test_regions_yaml_with_a_duplicate_key_is_refused(tmp_path: Path, bundles: Path) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text("default_region: base\nbundle_dir: bundles\nallow_rollback: false\nallow_rollback: true\n"
                    "regions: {base: {bundle: base}}\n")
    with pytest.raises(ConfigError, match=r"regions\.yaml: not valid YAML: .*duplicate key 'allow_rollback' .* at "
                       r"line 4 column 1"):
        BundleStore.load(path)


def test_regions_yaml_with_a_duplicate_region_is_refused(tmp_path: Path, bundles: Path) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text("default_region: base\nbundle_dir: bundles\n"
                    "regions:\n  base: {bundle: base}\n  highway: {bundle: highway}\n  highway: {bundle: base}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'highway'"):
        BundleStore.load(path)


@pytest.mark.parametrize("number", ["9" * 400, "9223372036854775808", "0x" + "f" * 30])
def test_regions_yaml_with_an_integer_beyond_64_bits_is_refused(tmp_path: Path, bundles: Path, number: str) -> None:
    # valid YAML, but every check after it (math.isfinite, float()) would raise OverflowError
    path = tmp_path / "regions.yaml"
    path.write_text("default_region: base\nbundle_dir: bundles\n"
                    f"regions:\n  base: {{bundle: base, rules: {{speed_limit_kph: {number}}}}}\n")
    with pytest.raises(ConfigError, match=r"regions\.yaml: not valid YAML: integer .* at line 4 column"):
        BundleStore.load(path)


def test_regions_yaml_with_aliases_is_refused(tmp_path: Path, bundles: Path) -> None:
    # The "billion laughs": nine levels of aliases describe 10**9 strings to whatever walks the result.
    lines = ['a0: &a0 "lol"'] + [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 10)]
    path = tmp_path / "regions.yaml"
    path.write_text("\n".join(lines) + "\ndefault_region: base\nregions: {base: {bundle: base}}\n")
    with pytest.raises(ConfigError, match=r"regions\.yaml: not valid YAML: alias \*a0 is not accepted"):
        BundleStore.load(path)


@pytest.mark.parametrize("depth", [100, 50_000])
def test_deeply_nested_regions_yaml_names_the_file_and_never_raises_recursion_error(tmp_path: Path, depth: int
                                                                                    ) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text("default_region: base\nregions: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError, match=r"regions\.yaml: not valid YAML: nested more than 64 levels deep"):
        BundleStore.load(path)


def test_regions_yaml_that_is_not_utf8_or_too_large_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "regions.yaml"
    path.write_bytes(b"default_region: b\xe4se\n")
    with pytest.raises(ConfigError, match=r"regions\.yaml: is not UTF-8 text \(byte 0xe4 at offset 17\)"):
        BundleStore.load(path)
    with open(path, "wb") as fh:
        fh.truncate(64 << 20)
    with pytest.raises(ConfigError, match=r"regions\.yaml: is 64\.0 MiB, more than the limit of 1\.0 MiB"):
        BundleStore.load(path)


@needs_fifo
def test_fifo_as_regions_yaml_state_file_or_key_file_is_refused_at_start_up(tmp_path: Path, bundles: Path,
                                                                           signed: dict[str, Path]) -> None:
    fifo = tmp_path / "regions.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"regions\.yaml: is a FIFO"):
        call_guarded(lambda: BundleStore.load(fifo), fifo)
    fifo.unlink()
    state = tmp_path / "state.json"
    os.mkfifo(state)
    config = write_yaml(tmp_path, _doc(state_file="state.json"))
    with pytest.raises(ConfigError, match=r"state\.json: installed-version registry: is a FIFO"):
        call_guarded(lambda: BundleStore.load(config), state)
    key = tmp_path / "keys" / "fifo.public.pem"
    os.mkfifo(key)
    config = write_yaml(tmp_path, _doc(trusted_keys=["keys/fifo.public.pem"]))
    try:
        with pytest.raises(ConfigError, match=r"fifo\.public\.pem: key file is a FIFO"):
            call_guarded(lambda: BundleStore.load(config), key)
    finally:
        release_fifo(key)


def test_max_bundle_file_mib_bounds_every_bundle_read(tmp_path: Path, bundles: Path) -> None:
    store = BundleStore.load(write_yaml(tmp_path, _doc(max_bundle_file_mib=0.0005)))  # 524 bytes
    with pytest.raises(BundleError, match=r"decision\.safetensors: is \d+ B, more than the limit of 524 B"):
        store.load("base", architectures())
    with pytest.raises(ConfigError, match=r"max_bundle_file_mib must be a number in \(0, 1048576\], not -1"):
        BundleStore.load(write_yaml(tmp_path, _doc(max_bundle_file_mib=-1)))


# ------------------------------------------------------------------------------------------- the registry


def test_registry_with_a_duplicate_region_or_deep_nesting_is_refused(tmp_path: Path, bundles: Path) -> None:
    state = bundles / ".installed.json"
    record = '{"bundle_version": 9, "bundle_id": "x", "accepted": "t"}'
    state.write_text('{"schema_version": 1, "regions": {"highway": ' + record + ', "highway": '
                     + record.replace("9", "1") + "}}")
    config = write_yaml(tmp_path, _doc())
    with pytest.raises(ConfigError, match=r"\.installed\.json: installed-version registry: refused JSON: duplicate "
                       "key 'highway'"):
        BundleStore.load(config)
    state.write_text('{"schema_version": 1, "regions": ' + "[" * 10_000 + "]" * 10_000 + "}")
    with pytest.raises(ConfigError, match=r"nested more than 64 levels deep"):
        BundleStore.load(config)


def test_a_missing_registry_is_created_and_said_so(tmp_path: Path, bundles: Path, signed: dict[str, Path],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    config = write_yaml(tmp_path, _doc(trusted_keys=["keys/fleet.public.pem"]))
    with caplog.at_level(logging.WARNING, logger="regionadapt_ros.core.bundle_store"):
        store = BundleStore.load(config)
    assert store.registry_created
    assert "rollback registry" in caplog.text and "does not exist: it is created now" in caplog.text
    store.load("highway", architectures())
    caplog.clear()
    again = BundleStore.load(config)
    assert not again.registry_created and "rollback registry" not in caplog.text


# ------------------------------------------------------------------------------------ signature policy


def test_require_signatures_false_next_to_trusted_keys_is_refused(tmp_path: Path, signed: dict[str, Path]) -> None:
    config = write_yaml(tmp_path, _doc(require_signatures=False, trusted_keys=["keys/fleet.public.pem"]))
    with pytest.raises(ConfigError, match=r"require_signatures is false but trusted_keys are configured"):
        BundleStore.load(config)


def test_trusted_keys_alone_require_signatures_and_keep_the_registry_out_of_the_bundles(
        tmp_path: Path, bundles: Path, signed: dict[str, Path]) -> None:
    store = BundleStore.load(write_yaml(tmp_path, _doc(trusted_keys=["keys/fleet.public.pem"])))
    assert store.require_signatures
    assert store.state_file == Path(os.environ["ROS_HOME"]) / "regionadapt_ros" / "installed.json"
    assert store.load("highway", architectures()).bundle_version == 5
    # Deleting the signature of the (tampered) bundle does not downgrade it to "unsigned and accepted".
    (bundles / "highway" / "signature.json").unlink()
    with pytest.raises(BundleError, match=r"highway/signature\.json: missing: the bundle is unsigned"):
        store.load("highway", architectures())
    # And the registry cannot be put where whoever writes bundles could delete it.
    inside = write_yaml(tmp_path, _doc(trusted_keys=["keys/fleet.public.pem"], state_file="bundles/state.json"))
    with pytest.raises(ConfigError, match=r"state_file .*bundles/state\.json lies inside bundle_dir"):
        BundleStore.load(inside)


NOT_HIGHWAYS = r"highway/manifest\.json: holds the base bundle, not the bundle of region 'highway'"


def test_the_signed_base_bundle_copied_into_a_region_directory_is_refused(tmp_path: Path, bundles: Path,
                                                                         signed: dict[str, Path]) -> None:
    config = write_yaml(tmp_path, _doc(trusted_keys=["keys/fleet.public.pem"]))
    shutil.rmtree(bundles / "highway")
    shutil.copytree(bundles / "base", bundles / "highway")  # signed, verified, and not highway's
    store = BundleStore.load(config)
    with pytest.raises(BundleError, match=NOT_HIGHWAYS):
        store.load("highway", architectures())
    # Nor is a symbolic link in the region's place: regions.yaml names highway's directory, not the base's.
    shutil.rmtree(bundles / "highway")
    (bundles / "highway").symlink_to("base")
    with pytest.raises(BundleError, match=NOT_HIGHWAYS):
        BundleStore.load(config).load("highway", architectures())
    # A region served by the base model says so in regions.yaml, by naming the base directory.
    served = BundleStore.load(write_yaml(tmp_path, _doc(trusted_keys=["keys/fleet.public.pem"],
                                                        regions={"base": {"bundle": "base"},
                                                                 "highway": {"bundle": "base"}})))
    assert served.load("highway", architectures()).manifest["region"] == "base"


def test_state_record_survives_in_ros_home_when_the_bundle_directory_is_replaced(tmp_path: Path, bundles: Path,
                                                                                 signed: dict[str, Path]) -> None:
    config = write_yaml(tmp_path, _doc(trusted_keys=["keys/fleet.public.pem"]))
    BundleStore.load(config).load("highway", architectures())
    record = json.loads((Path(os.environ["ROS_HOME"]) / "regionadapt_ros" / "installed.json").read_text())
    assert record["regions"]["highway"]["bundle_version"] == 5
    # Whoever can write the bundle tree puts an older signed highway bundle there and wipes the tree's files.
    shutil.rmtree(bundles / "highway")
    write_head_delta(bundles / "highway", bundle_io.read_bundle(bundles / "base").resolve(), version=4)
    bundle_io.sign_bundle(bundles / "highway", signed["private"])
    for stray in bundles.glob(".*.json"):
        stray.unlink()
    with pytest.raises(BundleError, match=r"bundle_version 4 is older than installed version 5"):
        BundleStore.load(config).load("highway", architectures())


def test_strict_parsers_on_edge_cases() -> None:
    from regionadapt_ros.core import strict_parse

    assert strict_parse.loads_json(b'\xef\xbb\xbf{"a": [1, 2.5, "\\u00e9"]}', "x") == {"a": [1, 2.5, "é"]}
    assert strict_parse.loads_json('{"a": "\\ud83d\\ude00"}', "x") == {"a": "😀"}  # a valid surrogate pair
    refused = (('{"a": "\\udc00"}', "lone UTF-16 surrogate"), ("[1e999]", "overflows a 64-bit float"),
               ("[-Infinity]", "-Infinity is not a JSON number"), ("[" * 65 + "]" * 65, "64 levels"),
               ("[12345678901234567890]", "must fit in 64 bits"), ("[9223372036854775808]", "does not fit in 64 bits"),
               ('{"a":1,"a":1}', "duplicate key"))
    for text, needle in refused:
        with pytest.raises(ConfigError, match=needle):
            strict_parse.loads_json(text, "x")
    assert strict_parse.loads_json("[" * 64 + "]" * 64, "x") is not None
    assert strict_parse.loads_yaml("when: 2024-01-02\nbin: !!binary aGk=\n", "x")["bin"] == b"hi"
    with pytest.raises(ConfigError, match="lone UTF-16 surrogate"):
        strict_parse.loads_yaml('a: "\\ud800"\n', "x")
    with pytest.raises(ConfigError, match="duplicate key 1"):
        strict_parse.loads_yaml("1: a\n1: b\n", "x")


def test_mutated_regions_yaml_and_geofences_end_in_a_config_error_or_load(tmp_path: Path) -> None:
    from regionadapt_ros.core.geofence import GeofenceSet

    repo = Path(__file__).resolve().parents[1]
    target = tmp_path / "config" / "regions.yaml"
    target.parent.mkdir()
    refused = 0
    for data in mutations((repo / "config" / "regions.yaml").read_bytes(), 3, 300, b"{}[]:-&*!|>'\"\n #,?%@"):
        target.write_bytes(data)
        try:
            BundleStore.load(target, require_bundles=False)
        except ConfigError:
            refused += 1
    assert refused > 100
    fences = tmp_path / "fences.geojson"
    refused = 0
    for data in mutations((repo / "config" / "geofences.geojson").read_bytes(), 4, 200, b'{}[]",:0123456789.-eE'):
        fences.write_bytes(data)
        try:
            GeofenceSet.load(fences, "base")
        except ConfigError:
            refused += 1
    assert refused > 100


def test_keygen_never_writes_the_private_key_through_a_planted_link(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    elsewhere = tmp_path / "stolen.pem"
    (keys / "fleet.private.pem").symlink_to(elsewhere)
    private, _, _ = signing.generate_keypair(keys, "fleet", overwrite=True)  # the link is replaced, not followed
    assert not elsewhere.exists() and not private.is_symlink() and private.stat().st_mode & 0o777 == 0o600
