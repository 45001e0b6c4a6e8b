"""A compact set of 20-byte addresses: about 18 bytes each, however many there are.

A Python `set` of `bytes` costs ≈ 100 bytes per address (object header, hash slot, resizes): 1 GB
at 10 million. Here the first two bytes of an address pick one of 65,536 buckets, and a bucket is
one `bytes` holding the other 18 bytes of each of its addresses back to back. Deposit addresses
are hash outputs, so buckets fill evenly (≈ 150 addresses, 2.7 kB each at 10 million); a lookup
is one C-level `find` in its bucket, an insert copies one bucket.
"""

from __future__ import annotations

ADDRESS_BYTES = 20
BUCKET_BYTES = 2
SUFFIX_BYTES = ADDRESS_BYTES - BUCKET_BYTES
BUCKETS = 1 << (8 * BUCKET_BYTES)


class AddressSet:
    """Membership of 20-byte addresses; grows by `add` or by whole buckets (`load_bucket`)."""

    def __init__(self) -> None:
        self._buckets: list[bytes] = [b""] * BUCKETS
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, bytes) or len(address) != ADDRESS_BYTES:
            return False
        bucket = self._buckets[(address[0] << 8) | address[1]]
        suffix = address[BUCKET_BYTES:]
        at = bucket.find(suffix)
        # A match across two entries (the tail of one, the head of the next) is no member.
        while at >= 0:
            if at % SUFFIX_BYTES == 0:
                return True
            at = bucket.find(suffix, at + 1)
        return False

    def add(self, address: bytes) -> None:
        if len(address) != ADDRESS_BYTES:
            raise ValueError(f"an address is {ADDRESS_BYTES} bytes, not {len(address)}")
        if address in self:
            return
        self._buckets[(address[0] << 8) | address[1]] += address[BUCKET_BYTES:]
        self._count += 1

    def load_bucket(self, index: int, suffixes: bytes) -> None:
        """Fill the empty bucket `index` with the 18-byte suffixes of distinct addresses."""
        if len(suffixes) % SUFFIX_BYTES:
            raise ValueError(f"bucket {index}: {len(suffixes)} bytes is no whole number of keys")
        if self._buckets[index]:
            raise ValueError(f"bucket {index} is loaded already")
        self._buckets[index] = suffixes
        self._count += len(suffixes) // SUFFIX_BYTES
