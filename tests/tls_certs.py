"""Test certificates made with the `openssl` command line (no network, no Python package needed): a CA,
and certificates it signs for given host names and IP addresses. EC P-256 keys: made in milliseconds."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CA:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(folder: Path, name: str) -> CA:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=folder)
    return CA(cert, key)


def make_cert(folder: Path, ca: CA, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
              client: bool = False, key_password: str | None = None) -> tuple[Path, Path]:
    """(certificate, private key) for ``name`` signed by ``ca``; the key encrypted with
    ``key_password`` when given."""
    cert, key, csr, ext = (folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr",
                           folder / f"{name}.ext")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=folder)
    sans = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
    ext.write_text((f"subjectAltName={sans}\n" if sans else "") + "basicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-out", str(cert),
             "-days", "2", "-set_serial", str(secrets.randbits(63)), "-extfile", str(ext), cwd=folder)
    if key_password is not None:
        encrypted = folder / f"{name}.enc.key"
        _openssl("pkey", "-in", str(key), "-out", str(encrypted), "-aes256", "-passout", f"pass:{key_password}",
                 cwd=folder)
        key.unlink()
        key = encrypted
    return cert, key
