"""--ssl-self-signed's certificate: made once for the right names, reused, and clear errors for bad files."""

from __future__ import annotations

import ssl

import pytest
from cryptography import x509

from openmoshi.server.tls import TLSError, self_signed, ssl_context


def test_self_signed_is_made_once_and_covers_the_host(tmp_path):
    cert, key, fingerprint = self_signed("192.168.1.7", tmp_path)
    assert (key.stat().st_mode & 0o777) == 0o600  # the private key is its owner's only
    names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "192.168.1.7"}
    assert self_signed("192.168.1.7", tmp_path) == (cert, key, fingerprint)  # reused
    assert isinstance(ssl_context(cert, key), ssl.SSLContext)


def test_bad_certificate_files_are_clear_errors(tmp_path):
    cert, key, _ = self_signed("localhost", tmp_path)
    other_cert, other_key, _ = self_signed("10.0.0.1", tmp_path)
    with pytest.raises(TLSError, match="cannot use the certificate"):
        ssl_context(cert, other_key)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TLSError, match="cannot use the certificate"):
        ssl_context(tmp_path / "junk.pem", key)
    with pytest.raises(TLSError, match="TLS key not found"):
        ssl_context(cert, tmp_path / "missing.key")
