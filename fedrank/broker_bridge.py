"""The bridge section of an RSU's own Mosquitto (`fedrank broker-config --rsus ID --bridge-to HOST:PORT`).

Topology of a large fleet: one Mosquitto per RSU, serving that RSU and the vehicles in its coverage, bridged
upward to the cloud's broker. Only what crosses levels goes over the bridge: the RSU's stats and status up, the
cloud's budgets down. Updates, announcements, commands and handoffs stay local.

Upstream, the bridge is the RSU: it authenticates as the RSU's identity (its certificate, or its username and
password), so the cloud broker's ACL (generated with the same `--rsus`) applies to it unchanged. The bridge keeps
a persistent session (`cleansession false`) and queues locally while the uplink is down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proto.topics import Topics

if TYPE_CHECKING:
    from fedrank.broker_config import BrokerPlan


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); raise ValueError with a reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--bridge-to {text!r} is not HOST:PORT")
    return host, int(port)


def bridge_lines(p: BrokerPlan) -> list[str]:
    """The `connection` block for `p.rsus[0]`'s broker, or [] without `--bridge-to`."""
    if p.bridge_to is None:
        return []
    host, port = parse_address(p.bridge_to)
    rsu = p.rsus[0]
    t = Topics(p.root)
    lines = [
        "",
        f"# Bridge to the cloud broker: this broker serves RSU {rsu} and its vehicles; the RSU's stats and",
        "# status go up, the cloud's budgets come down. Upstream the bridge authenticates as the RSU itself.",
        f"connection fedrank-{rsu}",
        f"address {host}:{port}",
        f"remote_clientid {rsu}",
        "cleansession false",  # a persistent upstream session: nothing is lost while the uplink is down
        "notifications false",  # no $SYS connection state upstream (the RSU's ACL does not allow it)
        "restart_timeout 1 30",
        f"topic {t.root}/rsu/{rsu}/stats/+ out 1",
        f"topic {t.root}/status/rsu/{rsu} out 1",
        f"topic {t.root}/cloud/+/budget/+ in 1",
    ]
    if p.mutual_tls or p.tls:
        lines += [
            f"bridge_cafile {p.certs / 'ca.crt'}",
        ]
    if p.mutual_tls:
        lines += [
            f"bridge_certfile {p.certs / f'{rsu}.crt'}",
            f"bridge_keyfile {p.certs / f'{rsu}.key'}",
        ]
    if p.password:
        lines += [f"remote_username {rsu}", f"remote_password {p.bridge_password or 'SET-THE-RSU-PASSWORD'}"]
    return lines
