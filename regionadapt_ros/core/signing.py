"""Ed25519 keys and detached signatures for region bundles.

Keys are PEM files: the private key as unencrypted PKCS#8, the public key as SubjectPublicKeyInfo, so that
``openssl pkey -in key.pem -pubout`` and any other ed25519 tooling read them. A key is named by its key id:
the first 16 hex digits of the sha256 of the 32 raw public-key bytes.

This module signs and verifies bytes; what is signed (the canonical bundle manifest) is decided in
``core/bundle/``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from regionadapt_ros.core import safe_read
from regionadapt_ros.core.errors import ConfigError

KEY_ID_HEX_DIGITS = 16
MAX_KEY_FILE_BYTES = 16 * 1024


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of checking one signature: ``ok`` and, when known, the key that made it."""

    ok: bool
    key_id: str
    problem: str = ""


def key_id(public_key: Ed25519PublicKey) -> str:
    """Key id of a public key: sha256 of its 32 raw bytes, first ``KEY_ID_HEX_DIGITS`` hex digits."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_DIGITS]


_KEY_ID = re.compile(rf"\A[0-9a-f]{{{KEY_ID_HEX_DIGITS}}}\Z")


def shown_key_id(claimed: object) -> str:
    """A key id a signature document claims, for a message: as it is when it has the form of a key id, else
    quoted and escaped (the document is the signed object's own, and its text may be anything)."""
    if isinstance(claimed, str) and _KEY_ID.match(claimed):
        return claimed
    return safe_read.shown_name(claimed if isinstance(claimed, str) else repr(claimed), 40)


_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def generate_keypair(out_dir: str | os.PathLike[str], name: str = "regionadapt", overwrite: bool = False
                     ) -> tuple[Path, Path, str]:
    """Create a new ed25519 key pair as ``<out_dir>/<name>.private.pem`` and ``<name>.public.pem``.

    The private key file is created with mode 0600. Returns (private path, public path, key id).
    Refuses to replace an existing private key unless ``overwrite`` (a lost private key cannot be recovered).
    """
    # The name becomes two file names and is printed and listed in regions.yaml: a newline, a NUL (which
    # os.open refuses with ValueError) or a path separator has no place in it.
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
        raise ConfigError("--name", f"key name {name!r} must be 1-64 letters, digits, '_', '-' or '.', starting "
                                    "with a letter or digit")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / f"{name}.private.pem"
    public_path = out / f"{name}.public.pem"
    if not overwrite:
        for existing in (private_path, public_path):
            if existing.exists() or existing.is_symlink():  # a dangling link too: writing would create its target
                raise ConfigError(existing, "already exists; refusing to overwrite a key")
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Both keys are written in full to new files of this run's own (mkstemp: O_EXCL, mode 0600, so the private
    # key never exists with a wider mode, not even briefly) and only then renamed into place: a link planted at
    # either name is replaced, never written through, and a failed write (a full disk) leaves the old pair whole.
    written: list[Path] = []
    try:
        for pem, mode in ((private_pem, 0o600), (public_pem, 0o644)):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".pem.tmp", dir=out)
            written.append(Path(tmp))
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
        for final in (private_path, public_path):
            if final.is_dir() and not final.is_symlink():  # a rename onto it would fail after the other one
                raise ConfigError(final, "is a directory; refusing to replace it with a key")
        # the public key first: a failure between the two renames leaves the old private key, from which the
        # public key can be derived again, never a new private key whose public half is lost
        os.replace(written[1], public_path)
        os.replace(written[0], private_path)
    except OSError as exc:
        raise ConfigError(out, f"cannot write the key pair ({exc.strerror or exc})") from None
    finally:
        for tmp in written:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return private_path, public_path, key_id(private_key.public_key())


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS#8 PEM ed25519 private key; ConfigError naming the file otherwise."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(path, f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(path, f"private key is {type(key).__name__}, bundles are signed with ed25519")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read a SubjectPublicKeyInfo PEM ed25519 public key; ConfigError naming the file otherwise."""
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        # Handing a private key where a public one is expected usually means the wrong file is being
        # distributed to vehicles; say so rather than silently deriving the public half.
        raise ConfigError(path, "is a private key; configure the .public.pem file instead")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(path, f"not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(path, f"public key is {type(key).__name__}, bundles are signed with ed25519")
    return key


def load_trusted_keys(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Ed25519PublicKey]:
    """Read public-key PEM files into {key id: key}."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        key = load_public_key(path)
        keys[key_id(key)] = key
    return keys


def sign(private_key: Ed25519PrivateKey, data: bytes) -> dict[str, str]:
    """Detached signature document {"key_id": ..., "signature": base64} over ``data``."""
    signature = private_key.sign(data)
    return {"key_id": key_id(private_key.public_key()), "signature": base64.b64encode(signature).decode("ascii")}


def verify(signature_doc: Mapping[str, object], data: bytes, trusted_keys: Mapping[str, Ed25519PublicKey]
           ) -> SignatureCheck:
    """Check a signature document over ``data`` against the trusted keys.

    The key is looked up by the document's key id; an unknown key id is refused (trusting a key named by
    the signed object itself would let anyone sign). Never raises on bad input: the result says why.
    """
    claimed_key_id = signature_doc.get("key_id")
    encoded = signature_doc.get("signature")
    if not isinstance(claimed_key_id, str) or not isinstance(encoded, str):
        return SignatureCheck(False, shown_key_id(claimed_key_id),
                              "signature document needs string 'key_id' and 'signature'")
    public_key = trusted_keys.get(claimed_key_id)
    if public_key is None:
        shown = shown_key_id(claimed_key_id)
        return SignatureCheck(False, shown, f"signed by key {shown}, which is not a trusted key")
    try:
        raw_signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return SignatureCheck(False, claimed_key_id, "signature is not valid base64")
    try:
        public_key.verify(raw_signature, data)
    except InvalidSignature:
        return SignatureCheck(False, claimed_key_id, "signature does not match")
    return SignatureCheck(True, claimed_key_id)


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    # A PEM ed25519 key is about 120 bytes; the bound and the regular-file check keep a FIFO or /dev/zero given
    # as a key from hanging or filling the process (core/safe_read.py).
    try:
        return safe_read.read_bytes(path, max_bytes=MAX_KEY_FILE_BYTES, error=_key_file_error)
    except FileNotFoundError:
        raise ConfigError(path, "cannot read key file (No such file or directory)") from None


def _key_file_error(path: object, problem: str) -> ConfigError:
    return ConfigError(path, f"key file {problem}")
