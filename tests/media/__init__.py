"""Tests of the embedded media core (real aiortc peers on loopback)."""
