"""HTTPS for `openmoshi serve`: an SSL context from a certificate and key, or a self-signed pair for a LAN demo.

Browsers give the microphone only to pages on localhost or HTTPS. `--ssl-self-signed` makes (once, then reuses) a
certificate for localhost, 127.0.0.1, this machine's name and the --host address, valid for a year, kept in
`~/.cache/openmoshi/tls/` (XDG_CACHE_HOME respected; the key readable by its owner only). A browser warns about
it once; its SHA-256 fingerprint is printed so the user can check it is ours.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path


class TLSError(ValueError):
    """A certificate or key that cannot be used; the message names the file and the problem."""


def ssl_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise TLSError(f"TLS {what} not found: {path}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError, ValueError) as err:
        raise TLSError(f"cannot use the certificate {cert} with the key {key}: {err}") from None
    return ctx


def default_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "openmoshi" / "tls"


def self_signed(host: str, folder: Path | None = None) -> tuple[Path, Path, str]:
    """(cert path, key path, SHA-256 fingerprint) of a self-signed certificate covering `host`; reused while it
    is valid for more than a day and covers the same names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = folder or default_folder()
    names = sorted({"localhost", "127.0.0.1", socket.gethostname(), host} - {"0.0.0.0", "::", ""})
    tag = "-".join(n.replace(":", "_") for n in names)[:120]
    cert_path, key_path = folder / f"{tag}.crt", folder / f"{tag}.key"
    now = datetime.datetime.now(datetime.timezone.utc)
    if cert_path.is_file() and key_path.is_file():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.not_valid_after_utc > now + datetime.timedelta(days=1):
                return cert_path, key_path, cert.fingerprint(hashes.SHA256()).hex(":")
        except ValueError:
            pass  # unreadable: make a new one
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openmoshi (self-signed)")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    tmp_key = key_path.with_suffix(".key.tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    os.replace(tmp_key, key_path)
    tmp_cert = cert_path.with_suffix(".crt.tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_cert, cert_path)
    return cert_path, key_path, cert.fingerprint(hashes.SHA256()).hex(":")
