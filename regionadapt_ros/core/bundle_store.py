"""Where each region's bundle lives, its traffic rules, and rollback protection (``config/regions.yaml``).

regions.yaml::

    default_region: base          # served when no geofence matches; needs no geofence
    base_region: base             # optional (default "base"): the bundle every delta bundle resolves against
    bundle_dir: ../bundles        # relative paths are relative to this YAML file
    state_file: ...               # optional; see "Rollback protection" below for the default
    require_signatures: true      # implied by trusted_keys; false together with trusted_keys is refused
    trusted_keys: [keys/fleet.public.pem]
    allow_rollback: false
    max_bundle_file_mib: 512      # optional: a bundle file larger than this is refused before it is read
    regions:
      highway:
        bundle: highway           # directory under bundle_dir
        rules: {speed_limit_kph: 110, driving_side: right}

Everything is validated when the store is loaded (start-up), so a typo fails before the vehicle moves:
unknown keys, a region without a bundle directory, a region without a geofence (when the geofence region ids
are given), unreadable trusted keys.

Signatures: with trusted keys configured every bundle must be signed by one of them (``core/bundle/``), so
deleting a ``signature.json`` never turns a bundle into an accepted unsigned one; ``require_signatures: false``
next to trusted keys is refused as a contradiction.

Rollback protection: the state file records, per region, the highest ``bundle_version`` accepted; loading an
older bundle is refused unless ``allow_rollback``. The file is replaced atomically, so a crash never leaves a
half-written record, and it is parsed strictly (``core/strict_parse.py``). Whoever can write the bundle directory
must not be able to reset the protection by deleting the record: with trusted keys the state file must lie outside
``bundle_dir`` (ConfigError otherwise), and its default is ``$ROS_HOME/regionadapt_ros/installed.json``
(``~/.ros`` when ROS_HOME is unset), vehicle state beside ROS's own; without keys (a development set-up) the
default stays ``<bundle_dir>/.installed.json``. A registry that is missing at start-up is created from the bundles
accepted from then on, and that is logged as a warning (with trusted keys; debug without) and kept in
``registry_created`` (never silent).

A region directory must hold that region's bundle: the signed base bundle copied into ``bundles/highway`` would
be a silent downgrade. A region served by the base model names the base bundle's directory in regions.yaml (as
``urban_day: {bundle: base}`` does).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core import strict_parse
from regionadapt_ros.core.errors import BundleError, ConfigError
from regionadapt_ros.core.signing import load_trusted_keys

STATE_SCHEMA_VERSION = 1
DEFAULT_STATE_FILE_NAME = ".installed.json"
VEHICLE_STATE_FILE = Path("regionadapt_ros") / "installed.json"  # under $ROS_HOME (default ~/.ros)
MAX_STATE_BYTES = 1 << 20
DRIVING_SIDES = ("right", "left")
_LOG = logging.getLogger(__name__)

_TOP_LEVEL_KEYS = {"default_region", "base_region", "bundle_dir", "state_file", "require_signatures", "trusted_keys",
                   "allow_rollback", "max_bundle_file_mib", "regions"}
_REGION_KEYS = {"bundle", "rules"}


class _ClassOrInstanceMethod:
    """Descriptor: ``Class.name(...)`` calls the classmethod, ``instance.name(...)`` the instance method."""

    def __init__(self, on_class: classmethod, on_instance: Any) -> None:
        self._on_class = on_class
        self._on_instance = on_instance
        self.__doc__ = f"On the class: {on_class.__func__.__doc__}\nOn an instance: {on_instance.__doc__}"

    def __get__(self, instance: object, owner: type) -> Any:
        if instance is None:
            return self._on_class.__get__(None, owner)
        return self._on_instance.__get__(instance, owner)


@dataclass(frozen=True)
class RegionConfig:
    """One region of regions.yaml: its bundle directory (resolved) and its traffic rules."""

    region: str
    bundle_path: Path
    rules: Mapping[str, Any]


@dataclass
class RegionWeights:
    """A region's bundle, verified, rollback-checked and resolved to full weights:
    ``weights`` = {model: {tensor name: array}} shaped as the architecture."""

    region: str
    bundle_id: str
    bundle_version: int
    path: Path
    manifest: dict[str, Any]
    weights: dict[str, dict[str, np.ndarray]]
    signature_state: str


@dataclass
class BundleStore:
    """Region → bundle mapping with signature policy and rollback protection.

    ``BundleStore.load(path, geofence_regions)`` (alias ``from_yaml``) builds it from regions.yaml;
    ``store.load(region, expected_architectures)`` (alias ``load_region``) returns a region's weights.

    Thread-safe: loads may run on loader threads while another thread serves; the installed-version
    registry is read and replaced under a lock.
    """

    config_path: Path
    default_region: str
    base_region: str
    bundle_dir: Path
    state_file: Path
    region_configs: dict[str, RegionConfig]
    trusted_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    require_signatures: bool = False
    allow_rollback: bool = False
    max_file_bytes: int = bundle_io.DEFAULT_MAX_FILE_BYTES
    registry_created: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _base_cache: dict[str, dict[str, np.ndarray]] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], geofence_regions: Iterable[str] | None = None, *,
             bundle_dir: str | os.PathLike[str] | None = None, state_file: str | os.PathLike[str] | None = None,
             require_signatures: bool | None = None, allow_rollback: bool | None = None,
             trusted_keys: Iterable[str | os.PathLike[str]] | None = None, require_bundles: bool = True
             ) -> BundleStore:
        """Load and validate regions.yaml; ConfigError naming the file and the problem.

        ``geofence_regions``: region ids the geofence file defines; when given, every region but the default
        (and the base) must have a geofence, and every geofence region must be in regions.yaml. Keyword
        arguments override the YAML (node parameters); relative override paths are relative to the current
        directory. ``require_bundles=False`` skips the bundle-directory check (for tools that are about to
        build the bundles).
        """
        config_path = Path(path)
        doc = load_regions_document(config_path)
        unknown = sorted(set(map(str, doc)) - _TOP_LEVEL_KEYS)
        if unknown:
            raise ConfigError(config_path, f"unknown key(s) {unknown}; known: {sorted(_TOP_LEVEL_KEYS)}")
        here = config_path.parent

        def from_yaml_path(key: str, default: str | None) -> Path | None:
            value = doc.get(key, default)
            if value is None:
                return None
            if not isinstance(value, str) or not value:
                raise ConfigError(config_path, f"{key} must be a path string")
            return (here / value) if not Path(value).is_absolute() else Path(value)

        resolved_bundle_dir = Path(bundle_dir) if bundle_dir is not None else from_yaml_path("bundle_dir", ".")
        assert resolved_bundle_dir is not None
        explicit_state = Path(state_file) if state_file is not None else from_yaml_path("state_file", None)

        region_configs: dict[str, RegionConfig] = {}
        for region, entry in doc["regions"].items():
            region_configs[str(region)] = parse_region(config_path, region, entry, resolved_bundle_dir,
                                                        require_bundles)

        default_region = doc.get("default_region")
        if not isinstance(default_region, str) or default_region not in region_configs:
            raise ConfigError(config_path, f"default_region {default_region!r} must be one of the regions "
                              f"({', '.join(region_configs)})")
        base_region = doc.get("base_region", "base")
        if not isinstance(base_region, str) or base_region not in region_configs:
            raise ConfigError(config_path, f"base_region {base_region!r} must be one of the regions "
                              f"({', '.join(region_configs)}); every delta bundle resolves against it")

        if geofence_regions is not None:
            fenced = set(geofence_regions)
            for region in region_configs:
                if region not in fenced and region not in (default_region, base_region):
                    raise ConfigError(config_path, f"region '{region}' has no geofence (the geofence file defines "
                                      f"{', '.join(sorted(fenced)) or 'no regions'}); it could never become active")
            for region in sorted(fenced - set(region_configs)):
                raise ConfigError(config_path, f"region '{region}' has a geofence but no entry (no bundle) in "
                                  "regions.yaml")

        flags: dict[str, bool | None] = {}
        for key, override in (("require_signatures", require_signatures), ("allow_rollback", allow_rollback)):
            value = doc.get(key) if override is None else override
            if value is not None and not isinstance(value, bool):
                raise ConfigError(config_path, f"{key} must be true or false, not {value!r}")
            flags[key] = value
        max_mib = doc.get("max_bundle_file_mib", bundle_io.DEFAULT_MAX_FILE_BYTES // (1 << 20))
        if isinstance(max_mib, bool) or not isinstance(max_mib, (int, float)) or not math.isfinite(max_mib) \
                or not 0 < max_mib <= 1 << 20:
            raise ConfigError(config_path, f"max_bundle_file_mib must be a number in (0, 1048576], not {max_mib!r}")

        if trusted_keys is not None:
            key_paths = [Path(p) for p in trusted_keys]
        else:
            listed = doc.get("trusted_keys") or []
            if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
                raise ConfigError(config_path, "trusted_keys must be a list of public-key PEM paths")
            key_paths = [here / p if not Path(p).is_absolute() else Path(p) for p in listed]
        keys = load_trusted_keys(key_paths)
        if flags["require_signatures"] and not keys:
            raise ConfigError(config_path, "require_signatures is true but no trusted_keys are configured")
        if flags["require_signatures"] is False and keys:
            raise ConfigError(config_path, "require_signatures is false but trusted_keys are configured: with "
                              "trusted keys every bundle must be signed (an unsigned bundle would be a signed one "
                              "whose signature.json was deleted); drop require_signatures or the keys")

        if explicit_state is not None:
            resolved_state = explicit_state
        elif keys:
            resolved_state = vehicle_state_dir() / VEHICLE_STATE_FILE
        else:
            resolved_state = resolved_bundle_dir / DEFAULT_STATE_FILE_NAME
        if keys and _is_inside(resolved_state, resolved_bundle_dir):
            raise ConfigError(config_path, f"state_file {resolved_state} lies inside bundle_dir "
                              f"{resolved_bundle_dir}: with trusted keys the rollback registry must be kept where "
                              "whoever writes bundles cannot delete it (e.g. the default under $ROS_HOME)")

        store = cls(config_path=config_path, default_region=default_region, base_region=base_region,
                    bundle_dir=resolved_bundle_dir, state_file=resolved_state, region_configs=region_configs,
                    trusted_keys=keys, require_signatures=bool(flags["require_signatures"] or keys),
                    allow_rollback=bool(flags["allow_rollback"]), max_file_bytes=int(max_mib * (1 << 20)))
        try:
            existing = store.installed_versions(missing_ok=False)  # a corrupt registry fails at start-up
        except FileNotFoundError:
            existing = None
        if existing is None:
            store.registry_created = True
            # A vehicle with trusted keys is told loudly (a deleted registry resets the protection); a development
            # set-up without keys starts from scratch all the time and is not.
            _LOG.log(logging.WARNING if keys else logging.DEBUG, "%s: rollback registry %s does not exist: it is "
                     "created now, and protection starts from the bundles accepted from now on", config_path,
                     resolved_state)
        return store

    # ------------------------------------------------------------------------------------------ queries

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self.region_configs)

    def _region(self, region: str) -> RegionConfig:
        try:
            return self.region_configs[region]
        except KeyError:
            raise ConfigError(self.config_path, f"unknown region '{region}' (regions: "
                              f"{', '.join(self.region_configs)})") from None

    def bundle_path(self, region: str) -> Path:
        """The bundle directory of ``region``."""
        return self._region(region).bundle_path

    def rules(self, region: str) -> dict[str, Any]:
        """The traffic rules of ``region`` from regions.yaml (a copy), e.g. {"speed_limit_kph": 50,
        "driving_side": "right"}. These, not a bundle's ``rules``, are what the vehicle applies."""
        return dict(self._region(region).rules)

    def installed_versions(self, missing_ok: bool = True) -> dict[str, int]:
        """{region: highest bundle_version accepted so far} from the state file (FileNotFoundError when it is
        missing and not ``missing_ok``)."""
        with self._lock:
            return {region: record["bundle_version"] for region, record in self._read_state(missing_ok).items()}

    # ------------------------------------------------------------------------------------------ loading

    def read(self, region: str, expected_architectures: Mapping[str, Any] | None = None
             ) -> bundle_io.LoadedBundle:
        """Read and verify ``region``'s bundle with the store's signature policy, without resolving it and
        without rollback bookkeeping (for inspection and staging)."""
        path = self.bundle_path(region)
        loaded = bundle_io.read_bundle(path, expected_architectures, trusted_keys=self.trusted_keys,
                                       require_signature=self.require_signatures, max_file_bytes=self.max_file_bytes)
        if loaded.region == region:
            return loaded
        # A region may be served by the base model itself (e.g. the base model's home region), but only when
        # regions.yaml says so by naming the base bundle's directory: the base bundle found in another region's
        # directory is a downgrade, signed or not.
        base_path = self.bundle_path(self.base_region)
        if loaded.region == self.base_region and _same_directory(path, base_path):
            return loaded
        if loaded.region == self.base_region:
            raise BundleError(path / bundle_io.MANIFEST_NAME, f"holds the base bundle, not the bundle of region "
                              f"'{region}'; a region served by the base model names the base bundle directory "
                              f"({base_path.name}) in {self.config_path.name}")
        raise BundleError(path / bundle_io.MANIFEST_NAME, f"bundle is for region '{loaded.region}' but "
                          f"{self.config_path.name} maps region '{region}' to it")

    def load_region(self, region: str, expected_architectures: Mapping[str, Any] | None,
                    base_weights: Mapping[str, Mapping[str, np.ndarray]] | None = None, *,
                    record: bool = True) -> RegionWeights:
        """Verify, rollback-check and resolve ``region``'s bundle; record its version as installed.

        ``expected_architectures``: {model: fingerprint or named shapes} of the serving models.
        ``base_weights``: full weights of the base bundle for delta bundles; by default ``base_weights()``.
        ``record=False``: leave the version to ``record_installed``, called once the weights serve (a bundle that
        verifies but fails its warm-up must not raise the floor above the version still serving).
        Raises BundleError (the current weights keep serving) or ConfigError (unknown region).
        """
        loaded = self.read(region, expected_architectures)
        self._check_rollback(region, loaded)
        if loaded.is_delta:
            base = base_weights if base_weights is not None else self.base_weights(expected_architectures,
                                                                                  record=record)
        else:
            base = None
        weights = loaded.resolve(base)
        if record:
            self.record_installed(region, loaded.bundle_id, loaded.bundle_version)
        return RegionWeights(region, loaded.bundle_id, loaded.bundle_version, loaded.path, loaded.manifest,
                             weights, loaded.signature_state)

    def base_weights(self, expected_architectures: Mapping[str, Any] | None = None, *, record: bool = True
                     ) -> dict[str, dict[str, np.ndarray]]:
        """Full weights of the base bundle ({model: {tensor: array}}), loaded once and cached. ``record=False``:
        the base's version is not recorded as installed (it is only the reference a delta resolves on; the base
        region's own version is recorded when its set serves).

        Do not modify the arrays: they are shared by every later delta resolution (``resolve`` copies).
        """
        with self._lock:
            cached = self._base_cache
        if cached is None:
            loaded = self.read(self.base_region, expected_architectures)
            if loaded.is_delta:
                raise BundleError(loaded.path / bundle_io.MANIFEST_NAME, f"the base bundle (region "
                                  f"'{self.base_region}') must hold full weights, not {loaded.kinds}")
            self._check_rollback(self.base_region, loaded)
            cached = loaded.resolve(None)
            if record:
                self.record_installed(self.base_region, loaded.bundle_id, loaded.bundle_version)
            with self._lock:
                self._base_cache = cached
        elif expected_architectures is not None:
            for model, architecture in expected_architectures.items():
                label = self.bundle_path(self.base_region) / f"{model}{bundle_io.WEIGHTS_SUFFIX}"
                expected = bundle_io.as_fingerprint(label, architecture)
                if model not in cached:
                    raise BundleError(label, f"the base bundle has no model '{model}'")
                actual = bundle_io.fingerprint_of(cached[model])
                if actual["hash"] != expected["hash"]:
                    raise BundleError(label, "cached base weights do not fit the expected architecture")
        return cached

    # ``BundleStore.load(path, ...)`` reads regions.yaml, ``store.load(region, ...)`` loads a region's weights:
    # both spellings are established, so ``load`` dispatches on whether it is called on the class or an instance.
    load = _ClassOrInstanceMethod(from_yaml, load_region)

    def clear_cache(self) -> None:
        """Drop the cached base weights (e.g. after the base bundle was replaced)."""
        with self._lock:
            self._base_cache = None

    # ----------------------------------------------------------------------------------- rollback state

    def _check_rollback(self, region: str, loaded: bundle_io.LoadedBundle) -> None:
        with self._lock:
            record = self._read_state().get(region)
        if record is None or self.allow_rollback:
            return
        installed = record["bundle_version"]
        if loaded.bundle_version < installed:
            raise BundleError(loaded.path / bundle_io.MANIFEST_NAME, f"bundle_version {loaded.bundle_version} is "
                              f"older than installed version {installed} for region '{region}'; set "
                              "allow_rollback to accept")

    def record_installed(self, region: str, bundle_id: str, bundle_version: int) -> None:
        """Record ``bundle_version`` of ``region`` as installed (kept when higher than the recorded one):
        older versions are refused from now on unless ``allow_rollback``. ConfigError when it cannot be written."""
        with self._lock:
            state = self._read_state()
            record = state.get(region)
            if record is not None and record["bundle_version"] >= bundle_version:
                return  # only the highest accepted version protects against rollback
            state[region] = {"bundle_version": bundle_version, "bundle_id": bundle_id,
                             "accepted": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            document = {"schema_version": STATE_SCHEMA_VERSION, "regions": state}
            try:
                self.state_file.parent.mkdir(parents=True, exist_ok=True)
                bundle_io.atomic_write_bytes(self.state_file, (json.dumps(document, indent=2, sort_keys=True)
                                                                + "\n").encode())
            except OSError as exc:
                raise ConfigError(self.state_file, f"cannot record the installed bundle version "
                                  f"({exc.strerror or exc}); rollback protection needs a writable state_file") \
                    from None

    def _read_state(self, missing_ok: bool = True) -> dict[str, dict[str, Any]]:
        try:
            document = strict_parse.load_json_file(self.state_file, max_bytes=MAX_STATE_BYTES,
                                                   error=_registry_error)
        except FileNotFoundError:
            if missing_ok:
                return {}
            raise
        regions = document.get("regions") if isinstance(document, dict) else None
        if not isinstance(document, dict) or document.get("schema_version") != STATE_SCHEMA_VERSION \
                or not isinstance(regions, dict):
            raise ConfigError(self.state_file, f"installed-version registry must be {{'schema_version': "
                              f"{STATE_SCHEMA_VERSION}, 'regions': {{...}}}}")
        for region, record in regions.items():
            version = record.get("bundle_version") if isinstance(record, dict) else None
            if isinstance(version, bool) or not isinstance(version, int):
                raise ConfigError(self.state_file, f"regions.{region}.bundle_version must be an integer")
        return regions


def vehicle_state_dir() -> Path:
    """Where vehicle state lives: $ROS_HOME, else ~/.ros (as ROS 2 itself resolves it for logs)."""
    ros_home = os.environ.get("ROS_HOME")
    return Path(ros_home).expanduser() if ros_home else Path.home() / ".ros"


def _registry_error(path: object, problem: str) -> ConfigError:
    return ConfigError(path, f"installed-version registry: {problem}; restore it, or delete it deliberately to "
                       "reset rollback protection")


def _is_inside(path: Path, directory: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(directory))
    except ValueError:
        return False
    return True


def _same_directory(a: Path, b: Path) -> bool:
    # Compared as regions.yaml names them, not as they resolve: a region directory that is a symbolic link to
    # the base bundle's is the base found in another region's place, not regions.yaml naming the base.
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def load_regions_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """regions.yaml read strictly (``strict_parse``: no duplicate keys, aliases or tags; bounded) as a mapping
    whose ``regions`` is a non-empty mapping; ConfigError naming the file otherwise. Every reader of a regions
    file goes through this, so a file one tool refuses is not read another way by another."""
    config_path = Path(path)
    try:
        doc = strict_parse.load_yaml_file(config_path)
    except FileNotFoundError:
        raise ConfigError(config_path, "cannot read (No such file or directory)") from None
    if not isinstance(doc, dict):
        raise ConfigError(config_path, "must be a YAML mapping with 'regions'")
    regions_doc = doc.get("regions")
    if not isinstance(regions_doc, dict) or not regions_doc:
        raise ConfigError(config_path, "regions must be a non-empty mapping {region id: {bundle, rules}}")
    return doc


def parse_region(config_path: Path, region: object, entry: object, bundle_dir: Path, require_bundles: bool
                 ) -> RegionConfig:
    """One ``regions.<id>`` entry, checked (id, keys, bundle, rules); ConfigError naming ``config_path``."""
    if not isinstance(region, str) or not bundle_io.REGION_ID_PATTERN.match(region):
        raise ConfigError(config_path, f"region id {region!r} must be letters, digits, '_', '-' or '.'")
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise ConfigError(config_path, f"region '{region}' must be a mapping {{bundle, rules}}")
    unknown = sorted(set(map(str, entry)) - _REGION_KEYS)
    if unknown:
        raise ConfigError(config_path, f"region '{region}': unknown key(s) {unknown}; known: {sorted(_REGION_KEYS)}")
    bundle = entry.get("bundle")
    if not isinstance(bundle, str) or not bundle:
        raise ConfigError(config_path, f"region '{region}' has no bundle (set regions.{region}.bundle to a "
                          "directory under bundle_dir)")
    bundle_path = bundle_dir / bundle
    if require_bundles and not bundle_path.is_dir():
        raise ConfigError(config_path, f"region '{region}': bundle directory {bundle_path} does not exist")
    rules = entry.get("rules")
    if rules is None:  # "rules:" with nothing after it; but [] or false is a mistake, not "no rules"
        rules = {}
    if not isinstance(rules, dict):
        raise ConfigError(config_path, f"region '{region}': rules must be a mapping, not {rules!r}")
    _validate_rules(config_path, region, rules)
    return RegionConfig(region, bundle_path, dict(rules))


def _validate_rules(config_path: Path, region: str, rules: Mapping[str, Any]) -> None:
    """Known rule keys are type- and range-checked; other keys pass through for the consumers that use them."""
    where = f"region '{region}': rules"

    def number(key: str) -> float | None:
        value = rules.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(config_path, f"{where}.{key} must be a number, not {value!r}")
        return float(value)

    speed = number("speed_limit_kph")
    if speed is not None and speed <= 0:
        raise ConfigError(config_path, f"{where}.speed_limit_kph must be > 0, not {speed:g}")
    factor = number("curve_speed_factor")
    if factor is not None and not 0 < factor <= 1:
        raise ConfigError(config_path, f"{where}.curve_speed_factor must be in (0, 1], not {factor:g}")
    # Collision-risk thresholds (core.collision_risk): a region may make the vehicle's stricter, never laxer.
    ttc = {key: number(key) for key in ("ttc_warn_s", "ttc_brake_s")}
    for key, value in ttc.items():
        if value is not None and value <= 0:
            raise ConfigError(config_path, f"{where}.{key} must be > 0 seconds, not {value:g}")
    if None not in ttc.values() and ttc["ttc_brake_s"] > ttc["ttc_warn_s"]:
        raise ConfigError(config_path, f"{where}.ttc_brake_s ({ttc['ttc_brake_s']:g} s) is above ttc_warn_s "
                          f"({ttc['ttc_warn_s']:g} s): the warning would come after the brake")
    gap = number("min_obstacle_distance_m")
    if gap is not None and gap < 0:
        raise ConfigError(config_path, f"{where}.min_obstacle_distance_m must be >= 0 metres, not {gap:g}")
    side = rules.get("driving_side")
    if side is not None and side not in DRIVING_SIDES:
        raise ConfigError(config_path, f"{where}.driving_side must be one of {', '.join(DRIVING_SIDES)}, "
                          f"not {side!r}")
    for key, value in rules.items():
        if not isinstance(key, str) or isinstance(value, (dict, list)):
            raise ConfigError(config_path, f"{where}.{key} must be a scalar")
