"""The validity period of a PEM client certificate, read without a crypto library.

client-go's exec plugin metrics need two dates of the certificate a plugin hands out (its
``notBefore`` and ``notAfter``), and resilient_kube depends on no X.509 parser. A certificate is
DER (X.690): nested type-length-value records, and the dates sit at a fixed place::

    Certificate  SEQUENCE { tbsCertificate SEQUENCE {
        [0] version (optional), serialNumber INTEGER, signature SEQUENCE, issuer SEQUENCE,
        validity SEQUENCE { notBefore Time, notAfter Time }, ... } ... }

``Time`` is a UTCTime (``YYMMDDHHMMSSZ``, years 1950-2049, RFC 5280 section 4.1.2.5.1) or a
GeneralizedTime (``YYYYMMDDHHMMSSZ``). Anything else gives None: these dates feed metrics, and a
certificate they cannot be read from is still used.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import time

__all__ = ["validity"]

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
_SEQUENCE, _CONTEXT_0, _UTC_TIME, _GENERALIZED_TIME = 0x30, 0xA0, 0x17, 0x18


def _record(der: bytes, at: int) -> tuple[int, int, int]:
    """The record at ``at``: its tag, where its value starts and where it ends."""
    tag, length = der[at], der[at + 1]
    at += 2
    if length & 0x80:  # the long form: the next (length & 0x7F) bytes hold the length
        size = length & 0x7F
        if not 0 < size <= 4:
            raise ValueError("unsupported length")
        length = int.from_bytes(der[at : at + size], "big")
        at += size
    end = at + length
    if end > len(der):
        raise ValueError("truncated")
    return tag, at, end


def _time(tag: int, value: bytes) -> float:
    text = value.decode("ascii")
    if not text.endswith("Z"):
        raise ValueError("not UTC")
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME:
        raise ValueError("not a time")
    return float(calendar.timegm(time.strptime(text[:14], "%Y%m%d%H%M%S")))


def validity(pem: bytes) -> tuple[float, float] | None:
    """``(notBefore, notAfter)`` in seconds since the epoch of the first certificate in ``pem``;
    None when there is none or it cannot be read."""
    match = _PEM.search(pem)
    if match is None:
        return None
    try:
        der = base64.b64decode(match.group(1), validate=False)
        tag, at, _ = _record(der, 0)  # Certificate
        if tag != _SEQUENCE:
            return None
        tag, at, _ = _record(der, at)  # tbsCertificate
        if tag != _SEQUENCE:
            return None
        tag, _, end = _record(der, at)
        if tag == _CONTEXT_0:  # version
            at = end
        for _ in range(3):  # serialNumber, signature, issuer
            at = _record(der, at)[2]
        tag, at, _ = _record(der, at)  # validity
        if tag != _SEQUENCE:
            return None
        tag, start, end = _record(der, at)
        not_before = _time(tag, der[start:end])
        tag, start, end = _record(der, end)
        return not_before, _time(tag, der[start:end])
    except (ValueError, IndexError, binascii.Error, UnicodeDecodeError):
        return None
