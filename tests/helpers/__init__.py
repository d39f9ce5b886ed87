"""Servers and fixtures shared by the tests: a DNS stub and a dnsmasq runner."""

from __future__ import annotations
