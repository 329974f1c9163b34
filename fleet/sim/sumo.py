"""SUMO mobility: random trips on a road network, an FCD trace, converted to the T-Drive format the fleet reads.

Offline and deterministic for a seed: `randomTrips.py` (with intermediate waypoints, so each vehicle keeps
driving for the whole duration) routes `vehicles` trips through `duarouter`, `sumo` writes a floating-car-data
trace every second, and the trace becomes `id,YYYY-MM-DD HH:MM:SS,lon,lat` lines (T-Drive's layout, times from
a fixed epoch), read back by `fleet.sim.tdrive`. Networks with a geo reference give real lon/lat
(`--fcd-output.geo`); networks without one (e.g. from `netgenerate`) are placed at a nominal origin by the
inverse of tdrive's equirectangular projection, so distances are kept.

Traces are cached per (network contents, seed, duration, vehicles, SUMO version) and written atomically: a
failed or interrupted generation leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fleet.sim.tdrive import EARTH_RADIUS_M

log = logging.getLogger(__name__)

# Networks that ship inside the eclipse-sumo wheel, by name (paths under SUMO_HOME).
BUNDLED = {
    "berlin-a10": "tools/game/A10KW/osm.net.xml",  # OSM extract by the A10 near Königs Wusterhausen, 2.5 x 3.2 km
    "braunschweig": "tools/game/bs3d/bs.net.xml",  # OSM extract of Braunschweig, 1.6 x 2.1 km
}
EPOCH = datetime(2008, 2, 2)  # T-Drive's first day; trace times are seconds after it
NOMINAL_LON0, NOMINAL_LAT0 = 116.4, 39.9  # where a network without a geo reference is placed (T-Drive's Beijing)
_TIMEOUT_S = 600


class SumoError(ValueError):
    """Bad SUMO mobility input or a failed SUMO run; the message names the config field."""


class SumoMobility(BaseModel):
    """`mobility: sumo` settings (FleetConfig.sumo)."""

    model_config = ConfigDict(extra="forbid")

    network: str = Field("braunschweig", description=f"a bundled network ({', '.join(BUNDLED)}) or a .net.xml path")
    seed: int | None = Field(None, description="SUMO and trip seed; unset = the fleet's seed")
    duration_s: float | None = Field(None, gt=0, description="simulated seconds; unset = the fleet's horizon")
    vehicles: int | None = Field(None, ge=1, description="vehicles simulated; unset = the fleet's vehicles")
    rsu_lonlat: list[tuple[float, float]] | None = Field(
        None, description="RSU sites as (lon, lat); unset = spread over the trace's bounding box, on the road")


def sumo_home() -> Path | None:
    """SUMO_HOME from the environment, else the eclipse-sumo package; None when SUMO is not installed."""
    env = os.environ.get("SUMO_HOME")
    if env and (Path(env) / "tools" / "randomTrips.py").is_file():
        return Path(env)
    try:
        import sumo  # the eclipse-sumo wheel
    except ImportError:
        return None
    home = Path(sumo.SUMO_HOME)
    return home if (home / "tools" / "randomTrips.py").is_file() else None


def _binary(home: Path, name: str) -> str:
    for cand in (home / "bin" / name, Path(sys.executable).parent / name):
        if cand.is_file():
            return str(cand)
    found = shutil.which(name)
    if found is None:
        raise SumoError(f"mobility: sumo needs the `{name}` binary (install eclipse-sumo)")
    return found


def resolve_network(network: str) -> Path:
    """A bundled network by name, or an existing `.net.xml` / `.net.xml.gz` file."""
    home = sumo_home()
    if network in BUNDLED:
        if home is None:
            raise SumoError(f"sumo.network: {network!r} is bundled with eclipse-sumo, which is not installed")
        return home / BUNDLED[network]
    path = Path(network).expanduser()
    if not path.is_file():
        log.error("sumo.network %r: neither a bundled network (%s) nor an existing file", network, ", ".join(BUNDLED))
        raise SumoError(f"sumo.network: {network!r} is neither a bundled network ({', '.join(BUNDLED)}) "
                        "nor an existing file")
    return path


def _geo(net: Path) -> bool:
    """True when the network carries a projection (so SUMO can write lon/lat)."""
    opener = __import__("gzip").open if net.suffix == ".gz" else open
    with opener(net, "rt", encoding="utf-8", errors="replace") as f:
        for _, el in ET.iterparse(f, events=("start",)):
            if el.tag == "location":
                return el.get("projParameter", "!") != "!"
    return False


def _version(home: Path) -> str:
    try:
        import sumo

        return str(getattr(sumo, "__version__", "") or home)
    except ImportError:
        return str(home)


def cache_key(net: Path, seed: int, duration_s: float, vehicles: int, home: Path) -> str:
    h = hashlib.sha256()
    h.update(net.read_bytes())
    h.update(f"|{seed}|{duration_s:.3f}|{vehicles}|{_version(home)}|v1".encode())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    return Path(os.environ.get("FEDRANK_SUMO_CACHE", Path.home() / ".cache" / "fedrank" / "sumo"))


def sumo_trace(network: str, seed: int, duration_s: float, vehicles: int, cache_dir: Path | None = None) -> Path:
    """The T-Drive-format trace of `vehicles` SUMO vehicles driving `duration_s` on `network` (cached)."""
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise SumoError(f"sumo.duration_s: {duration_s!r} must be a finite number > 0")
    if vehicles < 1:
        raise SumoError(f"sumo.vehicles: {vehicles} must be >= 1")
    home = sumo_home()
    if home is None:
        raise SumoError("mobility: sumo needs eclipse-sumo (pip install eclipse-sumo, in the dev extras)")
    net = resolve_network(network)
    root = cache_dir or default_cache_dir()
    out = root / cache_key(net, seed, duration_s, vehicles, home) / "trace.txt"
    if out.is_file():
        log.info("SUMO trace from the cache: %s", out)
        return out
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-") as tmp:
        work = Path(tmp)
        _simulate(home, net, seed, duration_s, vehicles, work)
        rows = fcd_to_tdrive(work / "fcd.xml", work / "trace.txt", geo=_geo(net))
        if rows == 0:
            raise SumoError(f"sumo.network: {network!r} produced no vehicle positions (no routable trips?)")
        final = out.parent
        staging = work / "done"
        staging.mkdir()
        (work / "trace.txt").rename(staging / "trace.txt")
        try:
            staging.rename(final)  # atomic: the cache entry appears complete or not at all
        except OSError:
            if not out.is_file():  # not a concurrent writer that got there first
                raise
    log.info("SUMO trace: %d vehicles x %.0f s on %s -> %s", vehicles, duration_s, net.name, out)
    return out


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SumoError(f"mobility: sumo {what} failed: {e}") from e
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SumoError(f"mobility: sumo {what} failed ({done.returncode}): {' | '.join(tail)}")


def strong_edges(home: Path, net: Path) -> list[str]:
    """Ids of the passenger-car edges in the network's largest strongly connected component: any trip between
    them, through any waypoints among them, can be routed (OSM extracts carry dead ends and one-way stubs)."""
    import networkx as nx

    if str(home / "tools") not in sys.path:
        sys.path.append(str(home / "tools"))
    import sumolib

    g = nx.DiGraph()
    for e in sumolib.net.readNet(str(net)).getEdges():
        if e.getFunction() == "internal" or not e.allows("passenger"):
            continue
        g.add_node(e.getID())
        for succ in e.getOutgoing():
            if succ.allows("passenger"):
                g.add_edge(e.getID(), succ.getID())
    if g.number_of_nodes() == 0:
        raise SumoError(f"sumo.network: {net} has no road a passenger car may use")
    return sorted(max(nx.strongly_connected_components(g), key=len))


def _simulate(home: Path, net: Path, seed: int, duration_s: float, vehicles: int, work: Path) -> None:
    env = {**os.environ, "SUMO_HOME": str(home), "PROJ_DATA": str(home / "data" / "proj"),
           "PROJ_LIB": str(home / "data" / "proj")}
    env["PATH"] = f"{home / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    edges = strong_edges(home, net)
    body = "".join(f'    <edge id="{e}" value="1"/>\n' for e in edges)  # one per line: sumolib's fast parser
    for suffix in ("src", "dst", "via"):
        (work / f"w.{suffix}.xml").write_text(f'<meandata>\n  <interval begin="0" end="1e9">\n{body}  </interval>\n'
                                              '</meandata>\n')
    # one trip per vehicle, departing a second apart, through enough random waypoints to keep driving
    intermediate = max(2, math.ceil(duration_s / 60))
    _run([sys.executable, str(home / "tools" / "randomTrips.py"), "-n", str(net), "-o", str(work / "trips.xml"),
          "-r", str(work / "routes.rou.xml"), "--seed", str(seed), "-b", "0", "-e", str(vehicles), "-p", "1",
          "--intermediate", str(intermediate), "--vclass", "passenger", "--weights-prefix", str(work / "w")],
         env, "randomTrips")
    cmd = [_binary(home, "sumo"), "-n", str(net), "-r", str(work / "routes.rou.xml"), "--fcd-output",
           str(work / "fcd.xml"), "--device.fcd.period", "1", "--end", str(math.ceil(duration_s)), "--seed",
           str(seed), "--no-step-log", "true", "--no-warnings", "true", "--ignore-route-errors", "true"]
    if _geo(net):
        cmd += ["--fcd-output.geo", "true"]
    _run(cmd, env, "simulation")


def _unproject(x: float, y: float) -> tuple[float, float]:
    """Inverse of tdrive.project about the nominal origin: local metres -> (lon, lat)."""
    lat = NOMINAL_LAT0 + math.degrees(y / EARTH_RADIUS_M)
    lon = NOMINAL_LON0 + math.degrees(x / (EARTH_RADIUS_M * math.cos(math.radians(NOMINAL_LAT0))))
    return lon, lat


def fcd_to_tdrive(fcd: Path, out: Path, geo: bool) -> int:
    """Convert a SUMO FCD file to T-Drive lines; returns the number of rows written (whole seconds only)."""
    rows = 0
    with open(out, "w", encoding="utf-8") as f:
        for _, el in ET.iterparse(fcd, events=("end",)):
            if el.tag != "timestep":
                continue
            t = float(el.get("time", "nan"))
            if not math.isfinite(t) or abs(t - round(t)) > 1e-6:
                el.clear()
                continue
            stamp = (EPOCH + timedelta(seconds=round(t))).strftime("%Y-%m-%d %H:%M:%S")
            for v in el:
                x, y = float(v.get("x", "nan")), float(v.get("y", "nan"))
                lon, lat = (x, y) if geo else _unproject(x, y)
                f.write(f"{v.get('id')},{stamp},{lon:.7f},{lat:.7f}\n")
                rows += 1
            el.clear()
    return rows
