"""The compact watched-address set: exact membership, whatever its buckets hold."""

from __future__ import annotations

import os

import pytest

from ctripd.chain.addresses import AddressSet


def test_members_and_strangers() -> None:
    members = [os.urandom(20) for _ in range(5000)]
    watched = AddressSet()
    for address in members:
        watched.add(address)
    watched.add(members[0])  # again: counted once
    assert len(watched) == 5000
    assert all(a in watched for a in members)
    assert not any(os.urandom(20) in watched for _ in range(5000))
    assert b"short" not in watched and "0x" + members[0].hex() not in watched


def test_a_match_across_two_entries_is_no_member() -> None:
    """The tail of one entry and the head of the next, in the same bucket, read as one key."""
    first, second = b"\x00\x01" + b"\xaa" * 18, b"\x00\x01" + b"\xbb" * 18
    watched = AddressSet()
    watched.add(first)
    watched.add(second)
    straddling = b"\x00\x01" + b"\xaa" * 9 + b"\xbb" * 9
    assert straddling not in watched
    watched.add(straddling)
    assert straddling in watched and len(watched) == 3


def test_buckets_load_whole() -> None:
    address = b"\x12\x34" + os.urandom(18)
    watched = AddressSet()
    watched.load_bucket(0x1234, address[2:] + os.urandom(18))
    assert address in watched and len(watched) == 2
    with pytest.raises(ValueError, match="loaded already"):
        watched.load_bucket(0x1234, os.urandom(18))
    with pytest.raises(ValueError, match="whole number"):
        watched.load_bucket(0x4321, os.urandom(19))
