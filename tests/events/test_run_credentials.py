"""A run attempt's credential, minted by the worker for every launch: its user key is the one its seed
makes, its JWT is signed by the run-signing key, and minting derives the signing key once, not once per
run (the server accepting it is tests/events/test_permissions.py's)."""

import base64

import nkeys
import pytest

import nexus.events.credentials as credentials
from nexus.events.credentials import BusAuth, decode_jwt_claims, new_user_key
from nexus.events.permissions import RunIdentity


def _parts(creds: str) -> tuple[str, bytes]:
    lines = creds.splitlines()
    jwt = lines[lines.index("-----BEGIN NATS USER JWT-----") + 1]
    seed = lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]
    return jwt, seed.encode()


def test_a_new_user_key_is_the_one_its_seed_makes() -> None:
    for _ in range(50):
        seed, public = new_user_key()
        kp = nkeys.from_seed(bytearray(seed))
        assert kp.public_key.decode() == public
        assert public.startswith("U") and seed.startswith(b"SU")


def test_a_minted_credential_is_signed_by_the_run_signer_for_its_user() -> None:
    signer = BusAuth.generate().run_signer
    jwt, seed = _parts(signer.mint(RunIdentity("run_1", 2, "ses_1", None), 60))
    claims = decode_jwt_claims(jwt)
    assert claims["sub"] == nkeys.from_seed(bytearray(seed)).public_key.decode()
    assert claims["iss"] == nkeys.from_seed(bytearray(signer.seed)).public_key.decode()
    assert claims["nats"]["issuer_account"] == signer.account_pub
    signing_input, _, signature = jwt.rpartition(".")
    verifier = nkeys.from_seed(bytearray(signer.seed))
    assert verifier.verify(signing_input.encode(), base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))


def test_minting_derives_the_signing_key_once(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = BusAuth.generate().run_signer
    derived: list[bytes] = []
    real = nkeys.from_seed

    def counted(seed):
        derived.append(bytes(seed))
        return real(seed)

    monkeypatch.setattr(credentials.nkeys, "from_seed", counted)
    for n in range(20):
        signer.mint(RunIdentity(f"run_{n}", 1, "ses_1", None), 60)
    assert derived.count(signer.seed) <= 1
    assert len(derived) <= 1  # a run's own key is made from its raw seed, not decoded again
