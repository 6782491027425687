"""Realistic raw SDK logs with a ground truth, for the demo and the end-to-end tests.

:func:`generate` simulates ``users`` people over ``days`` business dates and
writes what their SDKs would have uploaded, in one of the supported formats,
into ``landing_dir/<arrival date>/part-NNNN.jsonl[.gz]``. The arrival date of
a line is the local date (project time zone) of its receipt time. With
``truth_path`` it also writes the ground truth: one line per valid, unique
logical event, taken from the simulation itself (never from the files).

The model, per person:

* a first-active day (40 % on day 0, then a trickle every day), an
  engagement level, a daily churn hazard and a small chance of coming back;
* 1-4 sessions per active day at realistic local hours; events seconds to
  minutes apart, from a small shopping-app vocabulary chained by a Markov
  model; 4 % of longer sessions keep their ``$session_id`` across a 31-90 min
  pause; properties with Chinese text, emoji, quotes and a few values of
  2-6 KB;
* a sign-up funnel ``signup_start -> signup_submit -> signup_verify ->
  signup_done`` (about 100 / 70 / 55 / 45 %; ``DemoSpec.funnel_conversion``
  and ``funnel_time_factor`` make a step lossy or slow); a step can follow at the same
  millisecond, minutes, hours (across midnight) or days later (some beyond
  a 7-day window);
* identity: each device starts anonymous (``anon-...``); ``signup_done`` or
  an existing-account login switches it to the person's login id
  (``u_...``) and sends a link event at the login time; 6 % of logged-in
  people add a second device that logs in too; others never log in;
* profile events (first visit, sign-up, name/gender/city, later updates).

Delivery faults, all on top of the logical stream and all independent of the
output format (the same seed gives the same events, receipt times and files
in every format):

* SDK flush delays (seconds; sometimes minutes or hours, so lines of one
  local date can arrive on the next);
* late uploads: 2 % of sessions are uploaded 1-3 days later as one batch;
  3 % of link events arrive 1-3 days late (their event time is the login);
* retries: 1 % of lines are sent again; 70 % of these as identical bytes on
  the same arrival date, 30 % re-sent later (possibly on a later date) with
  a new send time in formats that carry one (Sensors ``_flush_time``, Segment
  ``sentAt``/``receivedAt``, PostHog ``sent_at``, canonical ``received_at``)
  and the same message id; Ark lines carry neither, so its re-sends are
  identical bytes too;
* 0.3 % malformed lines (truncated, garbage, missing id, missing time,
  non-numeric time, a JSON array), each an extra line beside a good copy;
* millisecond ties, and events at exactly 23:59:59.999 and 00:00:00.000
  local time.

Every event time lies inside the generated dates, every receipt is at most 3
local dates after its event's date and inside the generated dates too, so a
pipeline run for each generated date with a late-arrival limit >= 3 days loads
every valid event.
"""

from __future__ import annotations

import bisect
import gzip
import math
import random
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import orjson

from cohortflow import demo_catalog as C
from cohortflow import demo_formats as F
from cohortflow.progress import plural

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000

# Rates of the injected faults (per line / session / link, see the module doc).
RETRY_RATE = 0.01
RETRY_RESEND_SHARE = 0.30
LATE_SESSION_RATE = 0.02
LATE_LINK_RATE = 0.03
MALFORMED_RATE = 0.003
TIE_RATE = 0.006
LONG_VALUE_RATE = 0.002
CANONICAL_NO_EVENT_ID = 0.10

FUNNEL = ("signup_start", "signup_submit", "signup_verify", "signup_done")
FUNNEL_CONVERSION = (0.70, 0.786, 0.818)  # step to step: 100 -> 70 -> 55 -> 45 %


_HDR = struct.Struct("<qqI")


# --------------------------------------------------------------------------- public API


@dataclass
class DemoSpec:
    users: int = 2000  # people
    days: int = 14  # business dates
    start_date: date = date(2026, 11, 1)
    timezone: str = "Asia/Shanghai"  # project time zone; arrival dates are local dates
    seed: int = 7
    fmt: str = "ark"  # ark | sensors | segment | posthog | canonical
    app_id: str = "demo-app"
    # The sign-up funnel: the share of the previous step's people who take each next step, and a factor on the
    # time each next step takes (e.g. (1, 10, 1): the third step comes ten times later than usual). Neither
    # changes which random numbers are drawn, so the rest of the data stays the same.
    funnel_conversion: tuple[float, float, float] = FUNNEL_CONVERSION
    funnel_time_factor: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class DemoSummary:
    fmt: str
    start_date: date
    end_date: date
    timezone: str
    people: int = 0
    logged_in_people: int = 0  # people with at least one link event
    multi_device_people: int = 0
    events: int = 0  # valid unique logical events = ground-truth lines
    activity_events: int = 0
    lines_written: int = 0  # = events + retried_copies + malformed_lines
    lines_per_day: dict[str, int] = field(default_factory=dict)  # arrival date -> lines
    files: list[str] = field(default_factory=list)  # relative to the landing dir
    retried_copies: int = 0  # extra copies of valid lines
    retried_identical: int = 0  # ... byte-identical to the first copy
    retried_new_send_time: int = 0  # ... with another send time, same message id
    late_events: int = 0  # events of sessions uploaded 1-3 days late (link events not included)
    late_links: int = 0  # link events ($alias, ...) received 1-3 days late
    ms_ties: int = 0  # pairs of consecutive events of one person at the same millisecond
    malformed: dict[str, int] = field(default_factory=dict)  # kind -> lines
    midnight_events: int = 0  # events at exactly local 23:59:59.999 or 00:00:00.000
    long_values: int = 0  # property values of 2-6 KB
    long_session_gaps: int = 0  # pauses of 31-90 min inside one $session_id
    skewed_clock_events: int = 0  # events of devices with a wrong clock (shows in Segment lines only)
    funnel: dict[str, int] = field(default_factory=dict)  # step -> people who reached it (first attempt)
    cross_midnight_signups: int = 0  # signup_done on a later local date than signup_start
    multi_day_signups: int = 0  # signup_done more than 24 h after signup_start
    seconds: float = 0.0

    @property
    def malformed_lines(self) -> int:
        return sum(self.malformed.values())

    def anomalies(self) -> dict[str, int]:
        return {
            "retried_identical": self.retried_identical,
            "retried_new_send_time": self.retried_new_send_time,
            "late_events": self.late_events,
            "late_links": self.late_links,
            "ms_ties": self.ms_ties,
            "midnight_events": self.midnight_events,
            "long_values": self.long_values,
            "long_session_gaps": self.long_session_gaps,
            "skewed_clock_events": self.skewed_clock_events,
            "cross_midnight_signups": self.cross_midnight_signups,
            "multi_day_signups": self.multi_day_signups,
            **{f"malformed_{k}": v for k, v in self.malformed.items()},
        }

    def __str__(self) -> str:
        return (
            f"{self.fmt}: {self.people:,} people ({self.logged_in_people:,} logged in), {self.events:,} events, "
            f"{self.lines_written:,} lines in {plural(len(self.files), 'file')} over {plural(len(self.lines_per_day), 'day')} "
            f"({self.retried_copies} retried copies, {self.malformed_lines} malformed, "
            f"{self.late_events} late events, {self.late_links} late links) in {self.seconds:.1f}s"
        )


def generate(
    spec: DemoSpec,
    landing_dir: Path,
    truth_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Write the logs of ``spec`` into ``landing_dir`` (and the ground truth to ``truth_path``)."""
    if spec.fmt not in F.FORMATS:
        raise ValueError(f"unknown format {spec.fmt!r}; expected one of {', '.join(F.FORMATS)}")
    if spec.users < 1 or spec.days < 1:
        raise ValueError("users and days must be at least 1")
    landing_dir = Path(landing_dir)
    landing_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".demo-spill-", dir=landing_dir) as spill_dir:
        gen = _Generator(spec, Path(spill_dir), truth_path, progress or (lambda _m: None))
        try:
            gen.run()
        finally:
            gen.close()
        gen.write_days(landing_dir)
    gen.summary.seconds = time.monotonic() - t0
    return gen.summary


# --------------------------------------------------------------------------- calendar


class _Calendar:
    """Local day boundaries (as UTC epoch ms) of the generated dates and a few after."""

    def __init__(self, start: date, days: int, tz: str) -> None:
        zone = ZoneInfo(tz)
        self.dates = [start + timedelta(days=i) for i in range(days + 6)]
        self.starts = [
            int(datetime(d.year, d.month, d.day, tzinfo=zone).timestamp() * 1000) for d in self.dates
        ]
        self.iso = [d.isoformat() for d in self.dates]
        self.tz_label = []
        for d in self.dates:
            off = datetime(d.year, d.month, d.day, 12, tzinfo=zone).utcoffset() or timedelta(0)
            minutes = int(off.total_seconds() // 60)
            sign = "+" if minutes >= 0 else "-"
            self.tz_label.append(f"GMT{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}")
        self.zone = zone

    def idx(self, ms: int) -> int:
        return bisect.bisect_right(self.starts, ms) - 1

    def start(self, i: int) -> int:
        return self.starts[i]

    def end(self, i: int) -> int:
        """Last millisecond of day ``i``."""
        return self.starts[i + 1] - 1

    def local_str(self, ms: int) -> str:
        dt = datetime.fromtimestamp(ms / 1000, tz=self.zone)
        return dt.strftime("%Y-%m-%d %H:%M:%S") + f".{ms % 1000:03d}"


# --------------------------------------------------------------------------- model objects


class _Dev:
    __slots__ = ("anon", "platform", "channel", "lib", "lib_version", "os", "os_version", "model",
                 "old_version", "new_version", "upgrade_day", "skew", "login_t", "first_idx")


class _Sess:
    __slots__ = ("sid", "dev", "network", "events")

    def __init__(self, sid: str, dev: _Dev, network: str) -> None:
        self.sid = sid
        self.dev = dev
        self.network = network
        self.events: list[_Ev] = []


class _Ev:
    __slots__ = ("t", "kind", "name", "props", "sess", "receipt", "late")

    def __init__(self, t: int, kind: str, name: str, props: dict[str, Any], sess: _Sess) -> None:
        self.t = t
        self.kind = kind
        self.name = name
        self.props = props
        self.sess = sess
        self.receipt = 0
        self.late = False


# --------------------------------------------------------------------------- generator


class _Generator:
    def __init__(self, spec: DemoSpec, spill_dir: Path, truth_path: Path | None, progress: Callable[[str], None]):
        self.spec = spec
        self.fmt = spec.fmt
        self.rng = random.Random(spec.seed)
        self.cal = _Calendar(spec.start_date, spec.days, spec.timezone)
        self.D = spec.days
        self.first_ms = self.cal.start(0)
        self.last_ms = self.cal.end(spec.days - 1)
        self.progress = progress
        self.summary = DemoSummary(
            fmt=spec.fmt,
            start_date=spec.start_date,
            end_date=spec.start_date + timedelta(days=spec.days - 1),
            timezone=spec.timezone,
            malformed={k: 0 for k in F.MALFORMED_KINDS},
            funnel={k: 0 for k in FUNNEL},
        )
        self.seq = 0
        self.spill_dir = spill_dir
        self.spill: list[BinaryIO] = [open(spill_dir / f"{i}.bin", "wb") for i in range(spec.days)]
        self.lines_per_day = [0] * spec.days
        self.truth: BinaryIO | None = None
        if truth_path is not None:
            truth_path = Path(truth_path)
            truth_path.parent.mkdir(parents=True, exist_ok=True)
            raw = open(truth_path, "wb")
            self.truth = _gzip_writer(raw) if truth_path.name.endswith(".gz") else raw
        self.truth_buf: list[bytes] = []
        # first-day distribution: many in the first days, then a trickle
        D = spec.days
        w = [0.40, 0.12, 0.07][:D]
        if D > 3:
            w += [0.41 / (D - 3)] * (D - 3)
        self.first_day_cum = C.cumulative(tuple(w))
        # a small catalogue
        r = self.rng
        self.items = []
        for i in range(300):
            name, category, price = r.choice(C.ITEMS)
            price = round(price * r.choice((1, 1, 1, 0.9, 0.8, 0.5)), 2)
            self.items.append((f"sku_{10001 + i}", f"{name} · {i % 7 + 1}号款", category, price))

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        for f in self.spill:
            f.close()
        if self.truth is not None:
            if self.truth_buf:
                self.truth.write(b"".join(self.truth_buf))
            self.truth.close()

    def emit(self, receipt: int, data: bytes) -> None:
        a = self.cal.idx(receipt)
        assert 0 <= a < self.D, (receipt, a)
        self.spill[a].write(_HDR.pack(receipt, self.seq, len(data)) + data)
        self.seq += 1
        self.lines_per_day[a] += 1

    def write_days(self, landing_dir: Path) -> None:
        s = self.summary
        for a in range(self.D):
            day = self.cal.iso[a]
            folder = landing_dir / day
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("part-*.jsonl*"):
                old.unlink()
            data = (self.spill_dir / f"{a}.bin").read_bytes()
            recs: list[tuple[int, int, bytes]] = []
            off, n = 0, len(data)
            unpack = _HDR.unpack_from
            size = _HDR.size
            while off < n:
                r, q, ln = unpack(data, off)
                off += size
                recs.append((r, q, data[off : off + ln]))
                off += ln
            del data
            recs.sort(key=lambda x: (x[0], x[1]))
            total = len(recs)
            s.lines_per_day[day] = total
            s.lines_written += total
            nparts = min(total, max(4, math.ceil(total / 250_000)))
            for p in range(nparts):
                chunk = recs[p * total // nparts : (p + 1) * total // nparts]
                payload = b"\n".join(x[2] for x in chunk) + b"\n"
                if p == 1:
                    name = f"part-{p:04d}.jsonl"
                    (folder / name).write_bytes(payload)
                else:
                    name = f"part-{p:04d}.jsonl.gz"
                    with open(folder / name, "wb") as raw, _gzip_writer(raw) as gz:
                        gz.write(payload)
                s.files.append(f"{day}/{name}")
            self.progress(f"wrote {day}: {plural(total, 'line')} in {plural(nparts, 'file')}")

    # ------------------------------------------------------------------ small draws

    def _hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _time_of_day(self, d: int) -> int:
        r = self.rng
        h = bisect.bisect_left(C.HOUR_CUM, r.random() * C.HOUR_CUM[-1])
        length = self.cal.starts[d + 1] - self.cal.starts[d]
        return self.cal.starts[d] + int((h * HOUR + r.random() * HOUR) * length / DAY)

    def _device(self, first_day: int, not_platform: str | None = None) -> _Dev:
        r = self.rng
        dev = _Dev()
        while True:
            platform = C.PLATFORMS[bisect.bisect_left(C.PLATFORM_CUM, r.random() * C.PLATFORM_CUM[-1])]
            if platform != not_platform:
                break
        info = C.PLATFORM_INFO[platform]
        dev.anon = "anon-" + self._hex(80)
        dev.platform = platform
        names, weights = info["channel"]
        dev.channel = r.choices(names, weights)[0]
        dev.lib = info["lib"]
        dev.lib_version = info["lib_version"]
        dev.os = r.choice(info["os"])
        dev.os_version = r.choice(info["os_version"])
        dev.model = r.choice(info["model"])
        latest, latest_day, _ = C.VERSIONS[-1]
        if first_day >= latest_day and r.random() < 0.8:
            dev.old_version = latest
        else:
            dev.old_version = r.choices([v[0] for v in C.VERSIONS[:-1]], [v[2] for v in C.VERSIONS[:-1]])[0]
        dev.new_version = latest
        dev.upgrade_day = (
            None if dev.old_version == latest else max(latest_day, first_day + 1) + int(r.expovariate(0.3))
        )
        dev.skew = r.choice((-1, 1)) * r.randint(MINUTE, 3 * HOUR) if r.random() < 0.04 else 0
        dev.login_t = None
        dev.first_idx = -1
        return dev

    def _long_text(self) -> str:
        r = self.rng
        target = r.randint(2048, 6144)
        unit = r.choice(("超长搜索词🔍abc ", "lorem ipsum dolor sit amet, ", "重复的内容😀 "))
        text = unit * (target // len(unit.encode()) + 1)
        self.summary.long_values += 1
        return text[: max(1, len(text) * target // len(text.encode()))]

    def _props(self, name: str, st: dict[str, Any]) -> dict[str, Any]:
        r = self.rng
        if name == "app_start":
            return {"launch_type": "cold" if r.random() < 0.6 else "warm"}
        if name == "view_item":
            item = self.items[int(r.paretovariate(1.2)) % len(self.items)]
            st["item"] = item
            return {"item_id": item[0], "item_name": item[1], "category": item[2], "price": item[3]}
        if name == "search":
            kw = self._long_text() if r.random() < LONG_VALUE_RATE else r.choice(C.KEYWORDS)
            return {"keyword": kw, "result_count": r.randint(0, 500)}
        if name == "add_to_cart":
            item = st.get("item") or r.choice(self.items)
            q = r.choice((1, 1, 1, 2, 3))
            st["cart"] = st.get("cart", 0.0) + item[3] * q
            st["cart_n"] = st.get("cart_n", 0) + q
            return {"item_id": item[0], "price": item[3], "quantity": q}
        if name == "checkout":
            order = "o" + self._hex(48)
            amount = round(st.get("cart") or r.choice(self.items)[3], 2)
            st["order"] = (order, amount)
            return {"order_id": order, "amount": amount, "item_count": st.get("cart_n", 1)}
        if name == "pay_order":
            order, amount = st.get("order") or ("o" + self._hex(48), r.choice(self.items)[3])
            st.pop("cart", None)
            st.pop("cart_n", None)
            return {"order_id": order, "amount": amount, "pay_method": r.choice(C.PAY_METHODS)}
        if name == "share":
            item = st.get("item") or r.choice(self.items)
            text = self._long_text() if r.random() < LONG_VALUE_RATE else f"好物推荐：{item[1]} 👍"
            return {"item_id": item[0], "share_to": r.choice(C.SHARE_TO), "share_text": text}
        return {}

    def _session(self, t0: int, dev: _Dev, e: float, n: int | None = None) -> _Sess:
        """A session of ``n`` (or a random number of) activity events from ``t0``."""
        r = self.rng
        sess = _Sess("s-" + self._hex(64), dev, r.choice(C.NETWORKS))
        if n is None:
            n = 1 if r.random() < 0.12 else 2 + min(58, int(r.expovariate(1.0 / (3 + 9 * e))))
        self._extend(sess, t0, "app_start", n, {})
        return sess

    def _extend(self, sess: _Sess, t: int, name: str, n: int, st: dict[str, Any]) -> int:
        """Append ``n`` events starting with ``name`` at ``t``; returns the last time."""
        r = self.rng
        long_gap_at = r.randint(1, n - 1) if n >= 4 and r.random() < 0.04 else -1
        last = t
        for i in range(n):
            if i > 0:
                names, cum = C.CHAIN_CUM[name]
                nxt = names[bisect.bisect_left(cum, r.random() * cum[-1])]
                if i == long_gap_at:
                    gap = r.randint(31 * MINUTE, 90 * MINUTE)
                else:
                    x = r.random()
                    if x < TIE_RATE and nxt != name:
                        gap = 0
                    elif x < 0.9:
                        gap = 300 + int(r.expovariate(1 / 20_000))
                    else:
                        gap = r.randint(MINUTE, 10 * MINUTE)
                t += gap
                name = nxt
                if t > self.last_ms:
                    break
                if i == long_gap_at:
                    self.summary.long_session_gaps += 1
            elif t > self.last_ms:
                break
            sess.events.append(_Ev(t, F.TRACK, name, self._props(name, st), sess))
            last = t
        return last

    def _first_day(self) -> int:
        return bisect.bisect_left(self.first_day_cum, self.rng.random() * self.first_day_cum[-1])

    # ------------------------------------------------------------------ one person

    def run(self) -> None:
        n = self.spec.users
        roles: dict[int, tuple[str, int]] = {}
        picks = self.rng.sample(range(n), min(n, 5))
        wanted = [("start", 0), ("end", self.D - 1)]
        if self.D >= 2:
            wanted += [("cross", 0), ("cross", (self.D - 1) // 2), ("cross", self.D - 2)]
        for i, role in zip(picks, wanted):
            roles[i] = role
        step = max(1, n // 10)
        for i in range(n):
            self._person(i, roles.get(i))
            if (i + 1) % step == 0 or i + 1 == n:
                self.progress(f"simulated {i + 1:,}/{n:,} people")
                if self.truth is not None and self.truth_buf:
                    self.truth.write(b"".join(self.truth_buf))
                    self.truth_buf.clear()

    def _person(self, idx: int, role: tuple[str, int] | None) -> None:
        r = self.rng
        cal = self.cal
        D = self.D
        first = 0 if role is not None else self._first_day()
        e = r.betavariate(1.3, 2.0)
        dev0 = self._device(first)
        devices = [dev0]
        login_id = f"u_{10_000_000 + idx}"

        # lifecycle
        active = [first]
        churned = False
        act_p = 0.25 + 0.65 * e
        hazard = 0.03 + 0.3 * (1 - e) ** 2
        for d in range(first + 1, D):
            if churned:
                if r.random() < 0.02:
                    churned = False
                    active.append(d)
                continue
            if r.random() < hazard:
                churned = True
                continue
            if r.random() < act_p:
                active.append(d)

        sessions: list[_Sess] = []
        prev_end = 0
        counts = (1, 2, 3, 4)
        cum = C.cumulative((0.3, 0.33, 0.22, 0.15)) if e > 0.6 else C.cumulative((0.5, 0.28, 0.14, 0.08))
        by_day: dict[int, list[_Sess]] = {}
        for d in active:
            k = counts[bisect.bisect_left(cum, r.random() * cum[-1])]
            starts = sorted(self._time_of_day(d) for _ in range(k))
            for s in starts:
                if s < prev_end + 5 * MINUTE:
                    s = prev_end + r.randint(5 * MINUTE, HOUR)
                if s > self.last_ms:
                    break
                sess = self._session(s, dev0, e)
                if sess.events:
                    sessions.append(sess)
                    by_day.setdefault(d, []).append(sess)
                    prev_end = sess.events[-1].t
        if not sessions:  # a session pushed past the end: keep one event on the first day
            sess = self._session(self._time_of_day(first), dev0, e, n=1)
            sessions.append(sess)
            by_day.setdefault(first, []).append(sess)

        if role is not None:
            self._boundary_session(role, dev0, sessions)

        # first-visit profile
        first_sess = sessions[0]
        if r.random() < 0.5:
            t = min(first_sess.events[0].t + r.randint(5, 500), self.last_ms)
            first_sess.events.append(_Ev(t, F.PROFILE_SET_ONCE, "", {
                "$first_visit_time": cal.local_str(first_sess.events[0].t),
                "$first_visit_channel": dev0.channel,
            }, first_sess))

        # sign-up funnel, or a login with an existing account
        login_t = None
        login_sess = None
        sd = first if r.random() < 0.55 else next((d for d in active[1:] if r.random() < 0.08), None)
        if sd is not None and sd in by_day:
            login_t, login_sess = self._funnel(r.choice(by_day[sd]), sessions, e)
        elif r.random() < (0.3 if first <= 2 else 0.12):
            pool = [s for d in active[:3] for s in by_day.get(d, ())]
            if pool:
                login_sess = r.choice(pool)
                ev = r.choice(login_sess.events)
                login_t = min(ev.t + r.randint(1, 3000), self.last_ms)
                if r.random() < 0.6:
                    login_sess.events.append(_Ev(min(login_t + r.randint(5, 200), self.last_ms), F.PROFILE_SET,
                                                 "", self._profile(), login_sess))
        if login_t is not None:
            dev0.login_t = login_t
            login_sess.events.append(_Ev(login_t, F.LINK, "", {}, login_sess))
            # later profile updates
            for sess in sessions:
                if sess.events[0].t > login_t and r.random() < 0.04:
                    t = min(sess.events[0].t + r.randint(100, 5000), self.last_ms)
                    sess.events.append(_Ev(t, F.PROFILE_SET, "", {
                        "city": r.choice(C.CITIES), "vip_level": r.randint(0, 5)}, sess))
            # a second device
            later = [s for s in sessions if s.events[0].t > login_t + HOUR and s.dev is dev0]
            if later and r.random() < 0.06:
                s0 = r.choice(later)
                dev1 = self._device(cal.idx(s0.events[0].t), not_platform=dev0.platform)
                devices.append(dev1)
                moved = [s for s in later if s is s0 or (s.events[0].t > s0.events[0].t and r.random() < 0.5)]
                for s in moved:
                    s.dev = dev1
                t1 = min(s0.events[0].t + r.randint(3000, 60_000), self.last_ms)
                dev1.login_t = t1
                s0.events.append(_Ev(t1, F.LINK, "", {}, s0))

        self._finish(sessions, devices, login_id)

    def _profile(self) -> dict[str, Any]:
        r = self.rng
        return {"name": r.choice(C.SURNAMES) + r.choice(C.GIVEN), "gender": r.choice(C.GENDERS),
                "city": r.choice(C.CITIES), "age": r.randint(16, 70)}

    def _boundary_session(self, role: tuple[str, int], dev: _Dev, sessions: list[_Sess]) -> None:
        r = self.rng
        kind, d = role
        sess = _Sess("s-" + self._hex(64), dev, "WIFI")
        st: dict[str, Any] = {}

        def add(t: int, name: str) -> None:
            sess.events.append(_Ev(t, F.TRACK, name, self._props(name, st), sess))

        if kind == "start":  # the very first millisecond of the range
            t = self.cal.start(0)
            add(t, "app_start")
            add(t + r.randint(2000, 20_000), "view_item")
        elif kind == "end":  # the very last millisecond of the range
            t = self.cal.end(self.D - 1)
            add(t - r.randint(2000, 50_000), "app_start")
            add(t, "view_item")
        else:  # across one local midnight
            t = self.cal.end(d)
            add(t - r.randint(2000, 50_000), "app_start")
            add(t, "view_item")
            add(t + 1, "view_item")
        sessions.append(sess)

    def _funnel(self, sess: _Sess, sessions: list[_Sess], e: float) -> tuple[int | None, _Sess | None]:
        """Sign-up steps after ``sess``; returns (login time, session) when signup_done happens."""
        r = self.rng
        s = self.summary
        t = sess.events[-1].t + 1000 + int(r.expovariate(1 / 15_000))
        cur = sess
        method = r.choice(C.SIGNUP_METHOD)
        t_start = t
        for i, step in enumerate(FUNNEL):
            if i > 0:
                if r.random() >= self.spec.funnel_conversion[i - 1]:
                    return None, None
                x = r.random()
                if x < 0.04:
                    gap = 0
                elif x < 0.86:
                    gap = 2000 + int(r.expovariate(1 / 40_000))
                elif x < 0.94:
                    gap = r.randint(HOUR, 10 * HOUR)
                else:
                    gap = r.randint(1, 9) * DAY + r.randint(0, 6 * HOUR)
                gap = int(gap * self.spec.funnel_time_factor[i - 1])
                t += gap
                if t > self.last_ms:
                    return None, None
                if gap >= 30 * MINUTE:  # comes back later: a new session
                    cur = _Sess("s-" + self._hex(64), sess.dev, r.choice(C.NETWORKS))
                    cur.events.append(_Ev(t - r.randint(2000, 30_000), F.TRACK, "app_start",
                                          {"launch_type": "cold"}, cur))
                    sessions.append(cur)
            elif t > self.last_ms:
                return None, None
            props: dict[str, Any]
            if step == "signup_start":
                props = {"entry": r.choice(C.SIGNUP_ENTRY)}
            elif step == "signup_verify":
                props = {"method": method, "verify_type": "邮件链接" if method == "邮箱" else "短信验证码"}
            else:
                props = {"method": method}
            cur.events.append(_Ev(t, F.TRACK, step, props, cur))
            s.funnel[step] += 1
        # signed up: log in, set the profile, carry on
        cal = self.cal
        if cal.idx(t) != cal.idx(t_start):
            s.cross_midnight_signups += 1
        if t - t_start > DAY:
            s.multi_day_signups += 1
        login_t = min(t + r.randint(1, 400), self.last_ms)
        cur.events.append(_Ev(min(login_t + r.randint(1, 50), self.last_ms), F.PROFILE_SET_ONCE, "",
                              {"$signup_time": cal.local_str(t), "signup_method": method}, cur))
        if r.random() < 0.85:
            cur.events.append(_Ev(min(login_t + r.randint(51, 150), self.last_ms), F.PROFILE_SET, "",
                                  self._profile(), cur))
        more = r.randint(0, 6)
        if more:
            self._extend(cur, login_t + 300 + r.randint(0, 20_000), "view_item", more, {})
        return login_t, cur

    # ------------------------------------------------------------------ finalise one person

    def _finish(self, sessions: list[_Sess], devices: list[_Dev], login_id: str) -> None:
        r = self.rng
        cal = self.cal
        s = self.summary
        fmt = self.fmt
        last_ms = self.last_ms

        # receipts: a whole session is uploaded late, or each event after a flush delay
        for sess in sessions:
            evs = [ev for ev in sess.events if ev.kind != F.LINK]
            late_at = None
            if evs and r.random() < LATE_SESSION_RATE:
                late_at = self._late_receipt(min(ev.t for ev in evs), max(ev.t for ev in evs))
            late_end = min(cal.end(cal.idx(late_at)), last_ms) if late_at is not None else 0
            for j, ev in enumerate(evs):
                if late_at is not None:
                    ev.receipt = min(late_at + 2 * j, late_end)
                    ev.late = True
                else:
                    ev.receipt = self._flush(ev.t)
            for ev in sess.events:
                if ev.kind == F.LINK:
                    late_at = self._late_receipt(ev.t, ev.t) if r.random() < LATE_LINK_RATE else None
                    if late_at is not None:
                        ev.receipt = late_at
                        ev.late = True
                    else:
                        ev.receipt = self._flush(ev.t)

        events = [ev for sess in sessions for ev in sess.events]
        events.sort(key=lambda ev: ev.t)

        # identity of each event, links, uniqueness of (distinct id, name, ms)
        links = {ev.sess.dev.anon: login_id for ev in events if ev.kind == F.LINK}
        seen: set[tuple[str, str, str, int]] = set()
        resolved: list[tuple[_Ev, str, str | None]] = []
        for ev in events:
            dev = ev.sess.dev
            if ev.kind == F.LINK:
                distinct, login = login_id, login_id
            elif dev.login_t is not None and ev.t >= dev.login_t:
                distinct, login = login_id, login_id
            else:
                distinct, login = dev.anon, None
            key = (distinct, ev.kind, ev.name, ev.t)
            while key in seen:  # never two events a content hash could confuse
                ev.t += 1 if ev.t < last_ms else -1
                key = (distinct, ev.kind, ev.name, ev.t)
            seen.add(key)
            if ev.receipt < ev.t:
                ev.receipt = ev.t
            resolved.append((ev, distinct, login))
        if links:
            s.logged_in_people += 1
        if len(devices) > 1:
            s.multi_device_people += 1
        s.people += 1

        prev_t = None
        for ev, distinct, login in resolved:
            dev = ev.sess.dev
            d = cal.idx(ev.t)
            if dev.first_idx < 0:
                dev.first_idx = d
            if prev_t == ev.t:
                s.ms_ties += 1
            prev_t = ev.t
            if ev.t == cal.starts[d] or ev.t == cal.starts[d + 1] - 1:
                s.midnight_events += 1
            if dev.skew:
                s.skewed_clock_events += 1
            version = dev.old_version if dev.upgrade_day is None or d < dev.upgrade_day else dev.new_version
            rec = F.DemoRecord(
                kind=ev.kind,
                name=ev.name,
                distinct_id=distinct,
                anonymous_id=dev.anon,
                login_id=login,
                time_ms=ev.t,
                uid=r.getrandbits(128),
                app_id=self.spec.app_id,
                platform=dev.platform,
                app_version=version,
                channel=dev.channel,
                session_id=ev.sess.sid,
                lib=dev.lib,
                lib_version=dev.lib_version,
                os=dev.os,
                os_version=dev.os_version,
                model=dev.model,
                network=ev.sess.network,
                time_zone=cal.tz_label[d],
                is_first_day=d == dev.first_idx,
                skew_ms=dev.skew,
                has_event_id=r.random() >= CANONICAL_NO_EVENT_ID,
                properties=ev.props,
            )
            r1 = ev.receipt
            if ev.late:
                if ev.kind == F.LINK:
                    s.late_links += 1
                else:
                    s.late_events += 1
            # a malformed extra line (e.g. a broken first attempt)
            if r.random() < MALFORMED_RATE:
                kind = r.choices(F.MALFORMED_KINDS, C.MALFORMED_WEIGHTS)[0]
                u, pick = r.random(), r.getrandbits(16)
                self.emit(r1, F.malformed_line(fmt, rec, r1, kind, u, pick))
                s.malformed[kind] += 1
            first_line = F.line(fmt, rec, r1)
            self.emit(r1, first_line)
            # a retried send
            if r.random() < RETRY_RATE:
                a1 = cal.idx(r1)
                if r.random() >= RETRY_RESEND_SHARE:  # same bytes, same arrival date
                    r2 = min(r1 + r.randint(200, 2 * MINUTE), cal.end(a1), last_ms)
                    copy = first_line
                else:  # sent again later, possibly on a later date
                    delay = r.randint(1000, 10 * MINUTE) if r.random() < 0.6 else r.randint(HOUR, 20 * HOUR)
                    r2 = max(r1, min(r1 + delay, last_ms, cal.end(d + 3)))
                    copy = F.line(fmt, rec, r2)
                self.emit(r2, copy)
                s.retried_copies += 1
                if copy == first_line:
                    s.retried_identical += 1
                else:
                    s.retried_new_send_time += 1
            # the ground truth
            s.events += 1
            if ev.kind == F.TRACK:
                s.activity_events += 1
            if self.truth is not None:
                self.truth_buf.append(orjson.dumps({
                    "person": links.get(distinct, distinct),
                    "distinct_id": distinct,
                    "event_name": F.event_name(fmt, rec),
                    "event_time_ms": ev.t,
                    "local_date": cal.iso[d],
                    "is_activity": ev.kind == F.TRACK,
                    "arrival_date": cal.iso[cal.idx(r1)],
                }) + b"\n")

    def _flush(self, t: int) -> int:
        """Receipt time of an event sent by the SDK's periodic flush."""
        r = self.rng
        x = r.random()
        if x < 0.97:
            delay = r.randint(50, 15_000)
        elif x < 0.995:
            delay = r.randint(MINUTE, HOUR)
        else:
            delay = r.randint(HOUR, 8 * HOUR)
        return min(t + delay, self.last_ms)

    def _late_receipt(self, t_first: int, t_last: int) -> int | None:
        """One upload 1-3 local dates after the events (>= 24 h after the last), or None if it can't fit."""
        r = self.rng
        cal = self.cal
        d_first, d_last = cal.idx(t_first), cal.idx(t_last)
        k_max = min(3 - (d_last - d_first), self.D - 1 - d_last)
        if k_max < 1:
            return None
        k = r.randint(1, k_max)
        for kk in range(k, k_max + 1):
            lo = max(cal.start(d_last + kk), t_last + DAY)
            hi = cal.end(d_last + kk)
            if lo <= hi:
                return r.randint(lo, hi)
        return None


def _gzip_writer(raw: BinaryIO) -> gzip.GzipFile:
    # mtime=0 and no file name: the same input gives the same bytes
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=5, mtime=0)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m cohortflow.demo", description=__doc__.split("\n")[0])
    p.add_argument("landing_dir", type=Path)
    p.add_argument("--truth", type=Path, default=None, help="ground truth JSONL(.gz) to write")
    p.add_argument("--users", type=int, default=DemoSpec.users)
    p.add_argument("--days", type=int, default=DemoSpec.days)
    p.add_argument("--start", type=date.fromisoformat, default=DemoSpec.start_date)
    p.add_argument("--timezone", default=DemoSpec.timezone)
    p.add_argument("--seed", type=int, default=DemoSpec.seed)
    p.add_argument("--format", dest="fmt", choices=F.FORMATS, default="ark")
    a = p.parse_args(argv)
    spec = DemoSpec(users=a.users, days=a.days, start_date=a.start, timezone=a.timezone, seed=a.seed, fmt=a.fmt)
    summary = generate(spec, a.landing_dir, a.truth, progress=lambda m: print(m, file=sys.stderr))
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
