"""Ed25519 keys and bundle signatures, with real keys and real signatures."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from test_bundle_support import replace_file_and_hash, rewrite_manifest, write_base

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core import signing
from regionadapt_ros.core.errors import BundleError, ConfigError


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, str]:
    return signing.generate_keypair(tmp_path / "keys", "fleet")


def test_keygen_writes_pem_pair_with_private_key_readable_only_by_owner(keys: tuple[Path, Path, str]) -> None:
    private_path, public_path, key = keys
    assert private_path.name == "fleet.private.pem" and public_path.name == "fleet.public.pem"
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    public_key = signing.load_public_key(public_path)
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key == hashlib.sha256(raw).hexdigest()[:16] == signing.key_id(public_key)
    assert signing.key_id(signing.load_private_key(private_path).public_key()) == key


def test_keygen_refuses_to_overwrite_a_key(tmp_path: Path, keys: tuple[Path, Path, str]) -> None:
    private_path, _, _ = keys
    before = private_path.read_bytes()
    with pytest.raises(ConfigError, match=r"fleet\.private\.pem: already exists; refusing to overwrite a key"):
        signing.generate_keypair(tmp_path / "keys", "fleet")
    assert private_path.read_bytes() == before


def test_sign_and_verify_bytes_round_trip(keys: tuple[Path, Path, str]) -> None:
    private_path, public_path, key = keys
    document = signing.sign(signing.load_private_key(private_path), b"payload")
    trusted = signing.load_trusted_keys([public_path])
    assert signing.verify(document, b"payload", trusted).ok
    check = signing.verify(document, b"payloaD", trusted)
    assert not check.ok and check.problem == "signature does not match" and check.key_id == key


def test_signed_bundle_verifies_against_the_trusted_key(tmp_path: Path, keys: tuple[Path, Path, str]) -> None:
    private_path, public_path, key = keys
    path, _ = write_base(tmp_path / "base")
    assert bundle_io.sign_bundle(path, private_path) == key
    document = json.loads((path / "signature.json").read_text())
    assert document["key_id"] == key and len(base64.b64decode(document["signature"])) == 64
    loaded = bundle_io.read_bundle(path, trusted_keys=[public_path], require_signature=True)
    assert loaded.signature_state == f"verified (key {key})"
    assert loaded.signer_key_id == key


def test_signature_covers_the_canonical_manifest_not_its_formatting(tmp_path: Path,
                                                                     keys: tuple[Path, Path, str]) -> None:
    private_path, public_path, _ = keys
    path, _ = write_base(tmp_path / "base")
    bundle_io.sign_bundle(path, private_path)
    manifest = json.loads((path / "manifest.json").read_text())
    # Same content, other key order and whitespace: still the same canonical bytes.
    (path / "manifest.json").write_text(json.dumps(dict(reversed(list(manifest.items()))), indent=7))
    bundle_io.read_bundle(path, trusted_keys=[public_path], require_signature=True)


def test_unsigned_bundle_is_refused_when_signatures_are_required(tmp_path: Path,
                                                                 keys: tuple[Path, Path, str]) -> None:
    _, public_path, _ = keys
    path, _ = write_base(tmp_path / "base")
    with pytest.raises(BundleError, match=r"signature\.json: missing: the bundle is unsigned and signatures are "
                       "required"):
        bundle_io.read_bundle(path, trusted_keys=[public_path], require_signature=True)
    # Without keys an unsigned bundle is a development bundle and accepted ...
    assert bundle_io.read_bundle(path).signature_state == "unsigned"


def test_trusted_keys_alone_refuse_an_unsigned_bundle(tmp_path: Path, keys: tuple[Path, Path, str]) -> None:
    # ... but with trusted keys, deleting signature.json must not turn a tampered bundle into an accepted
    # "unsigned" one, whatever require_signature says.
    private_path, public_path, _ = keys
    path, _ = write_base(tmp_path / "base")
    bundle_io.sign_bundle(path, private_path)
    rewrite_manifest(path, lambda m: m["metrics"].__setitem__("value", 0.1))
    (path / "signature.json").unlink()
    with pytest.raises(BundleError, match=r"signature\.json: missing: the bundle is unsigned, and with trusted keys "
                       "configured every bundle must be signed by one of them"):
        bundle_io.read_bundle(path, trusted_keys=[public_path], require_signature=False)
    report = bundle_io.verify_bundle(path, trusted_keys=[public_path])
    assert not report.ok and "must be signed" in report.checks[-1].detail


def test_manifest_altered_after_signing_is_refused(tmp_path: Path, keys: tuple[Path, Path, str]) -> None:
    private_path, public_path, _ = keys
    path, _ = write_base(tmp_path / "base")
    bundle_io.sign_bundle(path, private_path)
    rewrite_manifest(path, lambda m: m["metrics"].__setitem__("value", 0.1))  # a better-looking evaluation
    with pytest.raises(BundleError) as info:
        bundle_io.read_bundle(path, trusted_keys=[public_path])
    assert str(info.value).endswith("manifest.json: signature does not match (manifest altered after signing?)")


def test_weights_replaced_after_signing_are_refused_even_with_a_fixed_hash(tmp_path: Path,
                                                                            keys: tuple[Path, Path, str]) -> None:
    private_path, public_path, _ = keys
    path, _ = write_base(tmp_path / "base")
    bundle_io.sign_bundle(path, private_path)
    data = bytearray((path / "decision.safetensors").read_bytes())
    data[-1] ^= 0x01
    (path / "decision.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"decision\.safetensors: sha256 mismatch"):
        bundle_io.read_bundle(path, trusted_keys=[public_path])
    replace_file_and_hash(path, "decision.safetensors", bytes(data))  # the attacker also edits the manifest
    with pytest.raises(BundleError, match=r"manifest\.json: signature does not match"):
        bundle_io.read_bundle(path, trusted_keys=[public_path])


def test_bundle_signed_by_an_untrusted_key_is_refused(tmp_path: Path, keys: tuple[Path, Path, str]) -> None:
    _, public_path, _ = keys
    other_private, _, other_key = signing.generate_keypair(tmp_path / "other", "intruder")
    path, _ = write_base(tmp_path / "base")
    bundle_io.sign_bundle(path, other_private)
    with pytest.raises(BundleError, match=rf"signature\.json: signed by key {other_key}, which is not a trusted key"):
        bundle_io.read_bundle(path, trusted_keys=[public_path])


def test_forged_signature_claiming_the_trusted_key_is_refused(tmp_path: Path, keys: tuple[Path, Path, str]) -> None:
    _, public_path, key = keys
    other_private, _, _ = signing.generate_keypair(tmp_path / "other", "intruder")
    path, _ = write_base(tmp_path / "base")
    bundle_io.sign_bundle(path, other_private)
    document = json.loads((path / "signature.json").read_text())
    document["key_id"] = key
    (path / "signature.json").write_text(json.dumps(document))
    with pytest.raises(BundleError, match=r"manifest\.json: signature does not match"):
        bundle_io.read_bundle(path, trusted_keys=[public_path])


def test_malformed_signature_file_is_refused(tmp_path: Path, keys: tuple[Path, Path, str]) -> None:
    _, public_path, key = keys
    path, _ = write_base(tmp_path / "base")
    (path / "signature.json").write_text(json.dumps({"key_id": key, "signature": "not base64!"}))
    with pytest.raises(BundleError, match=r"signature\.json: signature is not valid base64"):
        bundle_io.read_bundle(path, trusted_keys=[public_path])
    (path / "signature.json").write_text("{")
    with pytest.raises(BundleError, match=r"signature\.json: not valid JSON"):
        bundle_io.read_bundle(path, trusted_keys=[public_path])


def test_signed_bundle_without_trusted_keys_is_read_but_not_called_verified(tmp_path: Path,
                                                                            keys: tuple[Path, Path, str]) -> None:
    private_path, _, key = keys
    path, _ = write_base(tmp_path / "base")
    bundle_io.sign_bundle(path, private_path)
    loaded = bundle_io.read_bundle(path)
    assert loaded.signature_state == f"signed by key {key}, not verified (no trusted keys given)"
    with pytest.raises(BundleError, match="signatures are required but no trusted public keys are configured"):
        bundle_io.read_bundle(path, require_signature=True)


def test_signing_refuses_a_corrupt_bundle(tmp_path: Path, keys: tuple[Path, Path, str]) -> None:
    private_path, _, _ = keys
    path, _ = write_base(tmp_path / "base")
    (path / "decision.safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="is 7 B but the manifest lists"):
        bundle_io.sign_bundle(path, private_path)
    assert not (path / "signature.json").exists()


def test_key_files_of_the_wrong_kind_are_refused(tmp_path: Path, keys: tuple[Path, Path, str]) -> None:
    private_path, public_path, _ = keys
    with pytest.raises(ConfigError, match=r"fleet\.private\.pem: is a private key; configure the \.public\.pem"):
        signing.load_public_key(private_path)
    with pytest.raises(ConfigError, match=r"fleet\.public\.pem: not an unencrypted PEM private key"):
        signing.load_private_key(public_path)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_path = tmp_path / "rsa.pem"
    rsa_path.write_bytes(rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError, match=r"rsa\.pem: public key is RSAPublicKey, bundles are signed with ed25519"):
        signing.load_public_key(rsa_path)
    with pytest.raises(ConfigError, match=r"missing\.pem: cannot read key file"):
        signing.load_public_key(tmp_path / "missing.pem")
