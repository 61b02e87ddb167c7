"""``regionadapt bundle``: inspect, verify and sign region bundles, and create signing keys.

    regionadapt bundle inspect PATH [--json]
    regionadapt bundle verify PATH [--key PUB ...] [--require-signature] [--base BASE_BUNDLE]
    regionadapt bundle sign PATH --key PRIV
    regionadapt bundle keygen --out DIR [--name NAME] [--force]

More ``bundle`` subcommands (e.g. ``build``, which needs torch) plug in without editing this file: a module
listed in ``EXTRA_SUBCOMMAND_MODULES`` that exists is imported and its ``register_bundle_subcommand(subparsers)``
is called with the ``bundle`` group's subparsers; code can also call ``register_extra(fn)`` before the parser is
built. Such a subcommand sets ``func=handler`` like every command.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regionadapt_ros.commands.argtypes import number

EXTRA_SUBCOMMAND_MODULES = ("regionadapt_ros.commands.bundle_build",)
_extra_registrars: list[Callable[[Any], None]] = []


def register_extra(registrar: Callable[[Any], None]) -> None:
    """Have ``registrar(bundle_subparsers)`` add a ``bundle`` subcommand whenever the parser is built."""
    _extra_registrars.append(registrar)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bundle", help="inspect, verify and sign region bundles; create keys",
                                   description="Region bundles: a directory with manifest.json, safetensors "
                                   "weights and optional ONNX, optionally signed with ed25519.")
    parser.set_defaults(func=lambda args: _print_help(parser))
    bundle_sub = parser.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND")

    inspect = bundle_sub.add_parser("inspect", help="show a bundle's manifest, files, metrics and signature")
    inspect.add_argument("path", type=Path, help="bundle directory")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    inspect.set_defaults(func=_inspect)

    verify = bundle_sub.add_parser("verify", help="check hashes, weights, architecture and signature (exit 0/1)")
    verify.add_argument("path", type=Path, help="bundle directory")
    verify.add_argument("--key", action="append", default=[], type=Path, metavar="PUB",
                        help="trusted public key PEM (repeatable): the bundle must be signed by one of them "
                             "(an unsigned bundle is refused too, as on a vehicle with trusted keys)")
    verify.add_argument("--require-signature", action="store_true",
                        help="refuse an unsigned bundle; without --key nothing can be verified, so every bundle "
                             "is refused")
    verify.add_argument("--base", "--architecture-from", dest="base", type=Path, metavar="BASE_BUNDLE",
                        help="base bundle: its architectures are expected, and a delta bundle is resolved on it "
                             "(--architecture-from is the old, deprecated name)")
    verify.add_argument("--max-file-mib", type=_positive_mib, metavar="MIB",
                        help="refuse a bundle file larger than this before reading it (default: 512)")
    verify.set_defaults(func=_verify)

    sign = bundle_sub.add_parser("sign", help="sign a bundle's manifest with an ed25519 private key")
    sign.add_argument("path", type=Path, help="bundle directory")
    sign.add_argument("--key", required=True, type=Path, metavar="PRIV", help="private key PEM (PKCS#8)")
    sign.set_defaults(func=_sign)

    keygen = bundle_sub.add_parser("keygen", help="create an ed25519 key pair for signing bundles")
    keygen.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the two PEM files")
    keygen.add_argument("--name", default="regionadapt", help="file name stem (default: regionadapt)")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    keygen.set_defaults(func=_keygen)

    for module_name in EXTRA_SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register_bundle_subcommand(bundle_sub)
    for registrar in _extra_registrars:
        registrar(bundle_sub)


_MIB = number(float, 0.0, 1 << 20, inclusive=False)


def _positive_mib(text: str) -> int:
    """argparse type: a size in MiB in (0, 1048576], returned in bytes (at least 1: a size below a byte would
    read as "no limit given")."""
    return max(1, int(_MIB(text) * (1 << 20)))


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _inspect(args: argparse.Namespace) -> int:
    from regionadapt_ros.core import bundle as bundle_io
    from regionadapt_ros.core import safe_read

    def show(text: str) -> None:  # every line may quote a hostile manifest's text: escaped
        print(safe_read.printable_text(text))

    summary = _summary(args.path, bundle_io)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False))
        return 0
    manifest = summary["manifest"]
    show(f"bundle      {summary['path']}")
    show(f"id          {summary['bundle_id']}")
    show(f"region      {manifest['region']}  (bundle_version {manifest['bundle_version']})")
    show(f"created     {manifest.get('created')} by {manifest.get('created_by')}")
    base = manifest["base_model"]
    show(f"base model  {base['hash'][:16]}…" + (f"  ({base['id']})" if base.get("id") else ""))
    show(f"signature   {summary['signature']['state']}")
    if manifest.get("override"):
        show(f"override    forced: {manifest['override'].get('reason')}")
    if manifest.get("rules"):
        show(f"rules       {json.dumps(manifest['rules'], sort_keys=True)}")
    show("models")
    for name, model in summary["models"].items():
        lora = f" (alpha {model['lora']['alpha']:g}, rank {model['lora']['rank']})" if model.get("lora") else ""
        stored = (f"{model['tensors']} tensors, {model['parameters']:,} values" if model["tensors"] is not None
                  else "weights unreadable")
        onnx = f", onnx {model['onnx']}" if model.get("onnx") else ""
        show(f"  {name:11s} {model['kind']}{lora}: {model['weights']} ({stored}{onnx}); "
             f"architecture {model['architecture_hash'][:12]} ({model['architecture_tensors']} tensors)")
    show("files")
    for name, entry in summary["files"].items():
        size = _human_size(entry["size"]) if entry["size"] is not None else "MISSING" if entry["problem"] == \
            "missing" else "REFUSED"
        problem = f"  ({entry['problem']})" if entry["problem"] not in (None, "missing") else ""
        show(f"  {name:28s} {size:>10s}  sha256 {entry['sha256'][:16]}…{problem}")
    for name in summary["unlisted_files"]:
        show(f"  {name:28s} {'':>10s}  not listed in the manifest (ignored)")
    show("metrics")
    if not manifest.get("metrics"):
        show("  (none)")
    for key, value in sorted(manifest.get("metrics", {}).items()):
        show(f"  {key}: {json.dumps(value, sort_keys=True)}")
    return 0


def _summary(path: Path, bundle_io: Any) -> dict[str, Any]:
    """What ``inspect`` shows: the manifest plus what is on disk, without verifying hashes (that is
    ``verify``'s job, and inspect must work on a bundle that fails verification)."""
    from regionadapt_ros.core import safe_read, strict_parse
    from regionadapt_ros.core.errors import BundleError
    from regionadapt_ros.core.signing import shown_key_id

    manifest = bundle_io.read_manifest(path)
    files: dict[str, dict[str, Any]] = {}
    readable: set[str] = set()
    for name, digest in sorted(manifest["files"].items()):
        # Only stat, never open: a FIFO or a device in place of a bundle file must not hang or flood inspect.
        entry: dict[str, Any] = {"sha256": digest, "size": None, "problem": None}
        try:
            _, info = safe_read.checked_target(path / name, within=bundle_io.bundle_root(path), max_bytes=1 << 62,
                                               error=BundleError)
            entry["size"] = info.st_size
            readable.add(name)
        except FileNotFoundError:
            entry["problem"] = "missing"
        except BundleError as exc:
            entry["problem"] = exc.problem
        files[name] = entry
    models: dict[str, dict[str, Any]] = {}
    for name, entry in manifest["models"].items():
        budget = bundle_io.tensor_header_budget(len(entry["architecture"]["params"]))
        tensors, values = (_count_tensors(path / entry["weights"], budget) if entry["weights"] in readable
                           else (None, None))
        models[name] = {"kind": entry["kind"], "weights": entry["weights"], "onnx": entry.get("onnx"),
                        "lora": entry.get("lora"), "tensors": tensors, "parameters": values,
                        "architecture_hash": entry["architecture"]["hash"],
                        "architecture_tensors": len(entry["architecture"]["params"])}
    signature_path = path / bundle_io.SIGNATURE_NAME
    signature: dict[str, Any] = {"signed": False, "key_id": None}
    try:
        document = strict_parse.load_json_file(signature_path, max_bytes=bundle_io.MAX_SIGNATURE_BYTES,
                                               within=bundle_io.bundle_root(path),
                                               error=BundleError)
        signature["signed"] = True
        key_id = document.get("key_id") if isinstance(document, dict) else None
        signature["key_id"] = key_id if isinstance(key_id, str) else None
        signature["state"] = (f"signed by key {shown_key_id(key_id)} (not verified here; run `regionadapt bundle "
                              "verify --key PUB`)")
    except FileNotFoundError:
        signature["state"] = "unsigned"
    except BundleError as exc:
        signature["signed"] = True
        signature["state"] = f"unreadable signature ({exc.problem})"
    try:
        unlisted = sorted(safe_read.printable_name(p.name) for p in path.iterdir()
                          if p.name not in manifest["files"]
                          and p.name not in (bundle_io.MANIFEST_NAME, bundle_io.SIGNATURE_NAME))
    except OSError:  # a folder that can be entered but not listed: the listed files are still shown
        unlisted = []
    return {"path": str(path), "bundle_id": bundle_io.bundle_id(manifest), "manifest": manifest, "files": files,
            "models": models, "signature": signature, "unlisted_files": unlisted}


def _count_tensors(weights_path: Path, header_budget: int) -> tuple[int | None, int | None]:
    """(tensor count, total values) from the safetensors header only; (None, None) if unreadable or if the
    header is larger than the architecture can need (``verify`` says why; a huge header costs gigabytes)."""
    import math
    import struct

    from safetensors import safe_open

    try:
        with weights_path.open("rb") as handle:
            head = handle.read(8)
        if len(head) < 8 or struct.unpack("<Q", head)[0] > header_budget:
            return None, None
        with safe_open(str(weights_path), framework="np") as handle:
            names = list(handle.keys())
            values = sum(math.prod(handle.get_slice(n).get_shape()) for n in names)
    except Exception:  # safetensors raises its own error type for a damaged header; inspect just says so
        return None, None
    return len(names), values


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _verify(args: argparse.Namespace) -> int:
    from regionadapt_ros.core import bundle as bundle_io
    from regionadapt_ros.core import safe_read
    from regionadapt_ros.core.errors import BundleError
    from regionadapt_ros.core.signing import load_trusted_keys

    keys = load_trusted_keys(args.key)  # ConfigError naming the key file if unreadable
    max_file_bytes = bundle_io.DEFAULT_MAX_FILE_BYTES if args.max_file_mib is None else args.max_file_mib
    expected = None
    base_weights = None
    if args.base is not None:
        try:
            # The base is a reference here: a signed one must verify, an unsigned one is accepted (a delta names
            # its base's weights hash, so a tampered base cannot resolve it; a full bundle only takes the
            # architecture from it).
            signed = (args.base / bundle_io.SIGNATURE_NAME).exists()
            base = bundle_io.read_bundle(args.base, trusted_keys=(keys or None) if signed else None,
                                         max_file_bytes=max_file_bytes)
            if base.is_delta:
                raise BundleError(args.base / bundle_io.MANIFEST_NAME,
                                  "is a delta bundle; --base needs a base bundle of full weights")
            expected = base.architectures()
            base_weights = base.resolve()
        except BundleError as exc:
            print(safe_read.printable_text(f"FAIL  base bundle: {exc}"))
            print(f"REFUSED  {args.path}: the base bundle given with --base is not usable")
            return 1
        print(f"OK    base bundle: {base.bundle_id}")
    report = bundle_io.verify_bundle(args.path, expected, trusted_keys=keys or None,
                                     require_signature=args.require_signature, base_weights=base_weights,
                                     max_file_bytes=max_file_bytes)
    for line in report.lines():
        print(line)
    if report.ok:
        if expected is None:
            print("NOTE  architecture: not compared with a serving network (give --base BASE_BUNDLE): only the "
                  "bundle's own declarations were checked")
        print(safe_read.printable_text(f"ACCEPTED  {report.bundle_id}  signature: {report.signature_state}"))
        return 0
    print(f"REFUSED  {args.path}")
    return 1


def _sign(args: argparse.Namespace) -> int:
    from regionadapt_ros.core import bundle as bundle_io

    key = bundle_io.sign_bundle(args.path, args.key)
    print(f"signed {bundle_io.bundle_id(bundle_io.read_manifest(args.path))} with key {key}")
    print(f"wrote {args.path / bundle_io.SIGNATURE_NAME}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from regionadapt_ros.core.signing import generate_keypair

    private_path, public_path, key = generate_keypair(args.out, args.name, overwrite=args.force)
    print(f"key id       {key}")
    print(f"private key  {private_path}  (keep secret: signs bundles)")
    print(f"public key   {public_path}  (list under trusted_keys in regions.yaml)")
    return 0
