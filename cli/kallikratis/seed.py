"""The cloud-init NoCloud seed: rendered documents packed into an ISO 9660 image labelled cidata."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import pycdlib


@dataclass(frozen=True)
class Seed:
    user_data: str
    meta_data: str
    network_config: str

    def files(self) -> dict[str, str]:
        return {
            "user-data": self.user_data,
            "meta-data": self.meta_data,
            "network-config": self.network_config,
        }

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name, text in sorted(self.files().items()):
            h.update(name.encode() + b"\0" + text.encode() + b"\0")
        return h.hexdigest()[:16]

    def iso(self) -> bytes:
        """The seed as ISO 9660 bytes (Joliet + Rock Ridge names, volume label cidata)."""
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
        for i, (name, text) in enumerate(sorted(self.files().items())):
            data = text.encode()
            iso.add_fp(
                io.BytesIO(data), len(data), f"/FILE{i};1", rr_name=name, joliet_path=f"/{name}"
            )
        out = io.BytesIO()
        iso.write_fp(out)
        iso.close()
        return out.getvalue()
