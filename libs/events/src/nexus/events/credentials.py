"""NATS credentials: decentralized JWT authorization (operator → account → users), generated here.

Why this mechanism: a run's credential is minted per attempt by the worker with nothing but a
signing key — no server reload, no service that must answer before anyone can connect (as an auth
callout would need), and it works the same on one machine and across a cluster. The server is
configured once with the operator and the account (a memory resolver, preloaded); a user JWT carries
its own permissions (nexus.events.permissions), signed by the account, so the server enforces them
and no user can widen them. The account key signs the services' users at generation time and is
not given to any service; the worker holds only the separate run-signing key, and a run's JWT also
expires shortly after the run's wall-clock limit.

`python -m nexus.events.credentials generate DIR` writes a nats-server config, one creds file per
service and the run-signing seed; `... k8s DIR` prints them as Kubernetes Secrets."""

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys

from nexus.events.permissions import SERVICES, Permissions, RunIdentity, for_run

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}
_ACCOUNT_LIMITS = {**_UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1, "max_ack_pending": -1,
              "mem_max_stream_bytes": -1, "disk_max_stream_bytes": -1, "max_bytes_required": False}
ACCOUNT_NAME = "NEXUS"
# A run's credential outlives its wall-clock limit by this much (reporting the end, a slow start).
RUN_CREDS_GRACE_S = 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_seed(prefix: int) -> bytes:
    return nkeys.encode_seed(os.urandom(32), prefix)


def public_key(seed: bytes) -> str:
    return nkeys.from_seed(bytearray(seed)).public_key.decode()


def encode_jwt(signer_seed: bytes, subject: str, name: str, nats: dict, *, issuer_account: str | None = None,
               expires_at: int | None = None) -> str:
    kp = nkeys.from_seed(bytearray(signer_seed))
    claims: dict = {"iat": int(time.time()), "iss": kp.public_key.decode(), "name": name, "sub": subject, "nats": nats}
    if expires_at:
        claims["exp"] = int(expires_at)
    if issuer_account:
        claims["nats"] = {**nats, "issuer_account": issuer_account}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(kp.sign(signing_input.encode()))}"


def decode_jwt_claims(token: str) -> dict:
    """The claims of a JWT, unverified (for inspection and tests)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def user_claims(p: Permissions) -> dict:
    nats: dict = {"pub": {"allow": list(p.pub_allow)}, "sub": {"allow": list(p.sub_allow)}, **_UNLIMITED,
                  "type": "user", "version": 2}
    if p.pub_deny:
        nats["pub"]["deny"] = list(p.pub_deny)
    if p.sub_deny:
        nats["sub"]["deny"] = list(p.sub_deny)
    if p.allow_responses:
        nats["resp"] = {"max": 1, "ttl": 0}
    return nats


def creds_text(jwt: str, user_seed: bytes) -> str:
    """The standard `.creds` format nats clients read."""
    return (f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


def mint_user(signer_seed: bytes, account_pub: str, name: str, p: Permissions, *, expires_at: int | None = None) -> str:
    """A fresh user key and its JWT, as creds text. Signed by the account key or one of its signing keys."""
    user_seed = new_seed(nkeys.PREFIX_BYTE_USER)
    issuer = public_key(signer_seed)
    jwt = encode_jwt(signer_seed, public_key(user_seed), name, user_claims(p),
                     issuer_account=account_pub if issuer != account_pub else None, expires_at=expires_at)
    return creds_text(jwt, user_seed)


@dataclass(frozen=True)
class RunSigner:
    """What the worker holds: the run-signing key and the account it signs for (`<account>:<seed>`)."""

    account_pub: str
    seed: bytes

    @classmethod
    def parse(cls, text: str) -> "RunSigner":
        account, _, seed = text.strip().partition(":")
        if not account.startswith("A") or not seed.startswith("SA"):
            raise ValueError("a run signer is '<account public key>:<signing key seed>'")
        return cls(account, seed.encode())

    def __str__(self) -> str:
        return f"{self.account_pub}:{self.seed.decode()}"

    def mint(self, run: RunIdentity, wall_clock_s: float) -> str:
        return mint_user(self.seed, self.account_pub, run.user, for_run(run),
                         expires_at=int(time.time() + wall_clock_s + RUN_CREDS_GRACE_S))


@dataclass(frozen=True)
class BusAuth:
    """Everything a nats-server and the services need; generated once per deployment."""

    server_config: str  # nats-server configuration (operator mode, memory resolver)
    service_creds: dict[str, str]  # service → creds text
    run_signer: RunSigner

    @classmethod
    def generate(cls, users: dict[str, Permissions] | None = None) -> "BusAuth":
        operator = new_seed(nkeys.PREFIX_BYTE_OPERATOR)
        system, account, signer = (new_seed(nkeys.PREFIX_BYTE_ACCOUNT) for _ in range(3))
        op_pub, sys_pub, acc_pub = public_key(operator), public_key(system), public_key(account)
        op_jwt = encode_jwt(operator, op_pub, "nexus", {"type": "operator", "version": 2, "system_account": sys_pub})
        sys_jwt = encode_jwt(operator, sys_pub, "SYS", {"limits": _ACCOUNT_LIMITS, "type": "account", "version": 2})
        acc_jwt = encode_jwt(operator, acc_pub, ACCOUNT_NAME, {
            "limits": {**_ACCOUNT_LIMITS, **_JETSTREAM}, "signing_keys": [public_key(signer)],
            "default_permissions": {"pub": {}, "sub": {}}, "type": "account", "version": 2,
        })
        config = "\n".join([
            "# Generated by nexus.events.credentials: do not edit; regenerate.",
            f"operator: {op_jwt}",
            f"system_account: {sys_pub}",
            "resolver: MEMORY",
            "resolver_preload: {",
            f"  {sys_pub}: {sys_jwt}",
            f"  {acc_pub}: {acc_jwt}",
            "}",
            "",
        ])
        creds = {name: mint_user(account, acc_pub, name, p) for name, p in (users or SERVICES).items()}
        return cls(config, creds, RunSigner(acc_pub, signer))

    def write(self, directory: Path) -> Path:
        """Write `nats.conf`, `<service>.creds` and `run-signer` (all 0600) into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {"nats.conf": self.server_config, "run-signer": str(self.run_signer) + "\n",
                 **{f"{name}.creds": text for name, text in self.service_creds.items()}}
        for name, text in files.items():
            path = directory / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
        return directory

    @classmethod
    def load_or_generate(cls, directory: Path) -> "BusAuth":
        """The material in `directory` if it is complete, else newly generated there."""
        try:
            return cls(
                (directory / "nats.conf").read_text(),
                {name: (directory / f"{name}.creds").read_text() for name in SERVICES},
                RunSigner.parse((directory / "run-signer").read_text()),
            )
        except (OSError, ValueError):
            auth = cls.generate()
            auth.write(directory)
            return auth


def k8s_secrets(auth: BusAuth, namespace: str = "nexus") -> str:
    """The material as Kubernetes Secrets: the server's config, one per service, the worker's signer."""
    docs = [_secret("nexus-nats-config", namespace, {"auth.conf": auth.server_config})]
    for name, text in auth.service_creds.items():
        if name != "tools":
            docs.append(_secret(f"nexus-nats-{name}", namespace, {"nats.creds": text}))
    docs.append(_secret("nexus-nats-run-signer", namespace, {"run-signer": str(auth.run_signer)}))
    return "---\n".join(docs)


def _secret(name: str, namespace: str, data: dict[str, str]) -> str:
    lines = ["apiVersion: v1", "kind: Secret", "metadata:", f"  name: {name}", f"  namespace: {namespace}",
             "  labels: {app.kubernetes.io/part-of: nexus}", "type: Opaque", "data:"]
    lines += [f"  {k}: {base64.b64encode(v.encode()).decode()}" for k, v in data.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nexus.events.credentials", description="Generate NATS authorization.")
    parser.add_argument("command", choices=["generate", "k8s"], help="generate: files into DIR; k8s: print Secrets")
    parser.add_argument("dir", type=Path, help="where the material is kept (reused when complete)")
    parser.add_argument("--namespace", default="nexus")
    args = parser.parse_args(argv)
    auth = BusAuth.load_or_generate(args.dir)
    if args.command == "k8s":
        sys.stdout.write(k8s_secrets(auth, args.namespace))
    else:
        print(f"wrote {args.dir}/nats.conf, one .creds per service and run-signer")


if __name__ == "__main__":
    main()
