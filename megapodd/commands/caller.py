"""Who is asking, and what they may do."""

from __future__ import annotations

import enum
import grp
import os
import pwd
from dataclasses import dataclass

from megapodd.control.arbiter import Owner


class Role(enum.IntEnum):
    NONE = 0
    READER = 1
    ADMIN = 2


class Via(enum.StrEnum):
    SOCKET = "socket"  # megapodctl at the pod: a technician
    MQTT = "mqtt"  # the fleet, through the broker


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, as the kernel (or the broker) tells it; commands are audited with it."""

    uid: int
    pid: int
    role: Role
    via: Via = Via.SOCKET

    def as_json(self) -> dict[str, object]:
        return {
            "uid": self.uid,
            "pid": self.pid,
            "role": self.role.name.lower(),
            "via": self.via.value,
        }

    @property
    def who(self) -> str:
        """How claims and releases name their author: "uid 1001" or "mqtt"."""
        return f"uid {self.uid}" if self.via is Via.SOCKET else self.via.value

    @property
    def owner(self) -> Owner:
        """The arbiter slot this caller's actions take: a technician at the pod
        outranks the fleet, whose claims can never replace or end theirs."""
        return Owner.OVERRIDE if self.via is Via.SOCKET else Owner.FLEET


# The broker authenticated the client; what it may publish is the broker's ACL.
FLEET_CALLER = Caller(uid=-1, pid=0, role=Role.ADMIN, via=Via.MQTT)


def group_id(name: str) -> int | None:
    """The id of a group by name, or None if there is no such group."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def role_for(uid: int, gid: int, reader_group: str, admin_group: str) -> Role:
    """Root and the daemon's own user may act; so may the admin group's
    members. The reader group may read. Anyone else may do nothing."""
    if uid in (0, os.getuid()):
        return Role.ADMIN
    try:
        groups = set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except KeyError:
        groups = {gid}
    admin_gid, reader_gid = group_id(admin_group), group_id(reader_group)
    if admin_gid is not None and admin_gid in groups:
        return Role.ADMIN
    if reader_gid is not None and reader_gid in groups:
        return Role.READER
    return Role.NONE
