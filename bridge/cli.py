"""The ``bridge`` command: serve, worker, check, render, oncall, send-test.

``.env`` in the working directory is read first and never overrides the environment.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from dotenv import load_dotenv

from bridge import __version__
from bridge.config import Settings, check_bind
from bridge.decide.heartbeats import HeartbeatRecord
from bridge.deliveryproc import stop_on_signals
from bridge.errors import JuheError, PayloadError, RulesError, StoreUnavailable
from bridge.logs import setup as setup_logging
from bridge.privacy import mask_mobile
from bridge.providers.juhe import JuheClient, encode_tpl_value
from bridge.rules.load import load_rules
from bridge.rules.model import Voice
from bridge.rules.ruleset import RuleSet
from bridge.rules.schedules import OnCall, Shift, oncall_view, parse_local_time
from bridge.sources import SOURCES

log = logging.getLogger("bridge")


def _settings() -> Settings:
    load_dotenv(Path.cwd() / ".env", override=False)
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _rules_or_exit(path: str, tz: str) -> RuleSet:
    try:
        return load_rules(path, tz)
    except RulesError as exc:
        click.echo(f"{path}: {len(exc.problems)} problem(s):", err=True)
        for p in exc.problems:
            click.echo(f"  {p}", err=True)
        sys.exit(1)


#: The years ``--at`` accepts: the shifts, steps and mutes it computes reach centuries
#: ahead (``--next`` up to 1000 shifts of up to 366 days), and must stay within year 9999.
AT_YEARS = (1970, 2999)


def _at_or_exit(text: str | None, settings: Settings) -> datetime:
    """``--at``: ``YYYY-MM-DD HH:MM`` in ``BRIDGE_TZ`` (default now) with a year within
    :data:`AT_YEARS`, as an aware time; click's usage error (exit 2) otherwise."""
    if text is None:
        return datetime.now(UTC)
    try:
        local = parse_local_time(text)
        if not AT_YEARS[0] <= local.year <= AT_YEARS[1]:
            raise ValueError(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected YYYY-MM-DD HH:MM from {AT_YEARS[0]} to "
                                 f"{AT_YEARS[1]} (in BRIDGE_TZ, {settings.tz})",
                                 param_hint="--at") from None
    return local.replace(tzinfo=settings.zone)


def _retention_or_exit(rules: RuleSet, settings: Settings) -> None:
    """Stop when a route's ``repeat_interval`` outlives ``BRIDGE_RETENTION`` (dedup would
    silently break), naming both values."""
    from bridge.intake.reload import retention_problems

    problems = retention_problems(rules, settings.retention)
    if problems:
        click.echo(f"{settings.rules_path}: {len(problems)} problem(s) with BRIDGE_RETENTION:",
                   err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
        sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="bridge")
def main() -> None:
    """alert-sms bridge: Alertmanager/Grafana webhooks -> Juhe SMS for the on-call engineer."""


@main.command()
@click.option("--no-delivery", is_flag=True,
              help="take webhooks only; `bridge worker` delivers (deployments that want it apart)")
@click.option("--bind", "bind", metavar="ADDRESS",
              help="address to listen on (default $BRIDGE_BIND, else 0.0.0.0); the port is $PORT")
def serve(no_delivery: bool, bind: str | None) -> None:
    """Run the service under gunicorn on $BRIDGE_BIND:$PORT (0.0.0.0:8000): $WEB_CONCURRENCY
    web workers of $BRIDGE_THREADS threads take the webhooks, and one delivery process beside
    them sends the SMS from the store (none with --no-delivery)."""
    settings = _settings()
    if bind:
        try:
            check_bind(bind, "--bind")
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        settings = dataclasses.replace(settings, bind=bind)
    setup_logging(settings.log_format, settings.secrets, settings.log_level.upper())
    _retention_or_exit(_rules_or_exit(settings.rules_path, settings.tz), settings)
    _remove_stale_runtimes()
    runtime = tempfile.mkdtemp(prefix=f"bridge-run.{os.getpid()}.")
    metrics_dir = os.path.join(runtime, "metrics")
    os.makedirs(metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["BRIDGE_RUNTIME_DIR"] = runtime
    from bridge.server import run

    master = os.getpid()
    try:
        run(settings, runtime, deliver=not no_delivery)
    finally:
        # a gunicorn worker is a fork of this process: its exit unwinds this same stack, and
        # must not take the runtime folder (metrics, rules snapshot) from the others
        if os.getpid() == master:
            shutil.rmtree(runtime, ignore_errors=True)


def _remove_stale_runtimes() -> None:
    """Remove runtime folders of ``bridge serve`` masters that died without cleaning up
    (``bridge-run.PID.*`` in the temp folder, PID no longer running)."""
    for folder in Path(tempfile.gettempdir()).glob("bridge-run.*.*"):
        try:
            pid = int(folder.name.split(".")[1])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue


@main.command()
def worker() -> None:
    """Run delivery alone, without the HTTP server (SIGHUP reloads the rules)."""
    settings = _settings()
    setup_logging(settings.log_format, settings.secrets, settings.log_level.upper())
    from bridge.intake.service import Bridge

    try:
        b = Bridge(settings)
    except RulesError as exc:
        raise click.ClickException("rules refused:\n  " + "\n  ".join(exc.problems)) from None
    for line in b.describe():
        log.warning("%s", line) if line.startswith("WARNING") or "DRY-RUN" in line else log.info(
            "%s", line)
    stop = threading.Event()
    stop_on_signals(stop, on_hup=b.holder.reload)  # not signal handlers: they could deadlock
    log.info("delivery worker started (pid %d)", os.getpid())
    b.deliverer().run_forever(stop, settings.delivery_interval)
    log.info("delivery worker stopped")


@main.command()
@click.argument("rules", required=False)
def check(rules: str | None) -> None:
    """Validate a rules file or folder (default $BRIDGE_RULES); exit 1 listing every problem."""
    settings = _settings()
    path = rules or settings.rules_path
    rs = _rules_or_exit(path, settings.tz)
    click.echo(f"{path}: OK: {rs.summary()}")
    for name, r in zip(rs.route_names, rs.routes, strict=True):
        who = ", ".join(r.receivers) or "-"
        extra = f" + mobiles_from {r.mobiles_from}" if r.mobiles_from else ""
        click.echo(f"  route {name}: {len(r.matchers)} matchers -> {who}{extra}, "
                   f"template {r.template}"
                   + (f", resolved {r.resolved_template}" if r.resolved_template else "")
                   + (" (continue)" if r.continue_ else "")
                   + "".join(f"; after {s.after:g}s -> {s.receiver}" for s in r.escalate))
    for warning in rs.warnings():
        click.echo(f"WARNING: {warning}")
    for view in oncall_view(rs.schedules, rs.people, datetime.now(UTC), 0):
        sch = view.schedule
        members = ", ".join("+".join(m) for m in sch.members)
        click.echo(f"  schedule {sch.name}: {members}; {sch.shift_days}d shifts from "
                   f"{sch.start} at {sch.handover:%H:%M} {sch.zone.key}"
                   f"{f', overrides: {len(sch.overrides)}' if sch.overrides else ''}; "
                   f"on call now: {', '.join(view.now.people)}")
    _check_heartbeats(rs, settings)


def _heartbeat_records(settings: Settings) -> tuple[dict[str, HeartbeatRecord], str]:
    """The heartbeat records stored in ``BRIDGE_STORE``, and ``""`` or why they could not be
    read. A SQLite file that does not exist yet holds none (and is not created)."""
    from bridge.store import open_store

    url = settings.store
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return {}, ""
    try:
        store = open_store(url)
        try:
            return store.heartbeats(), ""
        finally:
            store.close()
    except (StoreUnavailable, ValueError) as exc:
        return {}, str(exc)


def _check_heartbeats(rs: RuleSet, settings: Settings) -> None:
    """``bridge check``'s heartbeat lines: each heartbeat and its state as ``BRIDGE_STORE``
    holds it (``waiting`` without a beat, ``up`` or ``missing`` as the service last recorded
    it), then which are waiting for a first beat (docs/heartbeats.md)."""
    if not rs.heartbeats:
        return
    from bridge.intake.readside import duration_text

    records, problem = _heartbeat_records(settings)
    waiting = []

    def at(ts: float) -> str:
        return f"{datetime.fromtimestamp(ts, settings.zone):%Y-%m-%d %H:%M:%S}"

    for name, hb in rs.heartbeats.items():
        record = records.get(name)
        if problem:
            state = "state unknown"
        elif record is None:
            waiting.append(name)
            state = "waiting (no beat yet)"
        elif record.state == "missing" and record.missing_since is not None:
            state = f"missing since {at(record.missing_since)}, last beat {at(record.last_seen)}"
        else:
            state = f"up, last beat {at(record.last_seen)}"
        beats = f"{len(hb.matchers)} matchers" if hb.matchers else f"/heartbeat/{name} only"
        click.echo(f"  heartbeat {name}: {beats}, expect {duration_text(hb.expect)} -> "
                   f"{', '.join(hb.receivers)}, template {hb.template}"
                   + (f", resolved {hb.resolved_template}" if hb.resolved_template else "")
                   + "".join(f"; after {s.after:g}s -> {s.receiver}" for s in hb.escalate)
                   + f": {state}")
    if problem:
        click.echo(f"  heartbeats: cannot read their state from the store: {problem}")
    elif waiting:
        click.echo(f"  heartbeats waiting for a first beat (nothing is paged for them until "
                   f"then): {', '.join(waiting)}")


@main.command()
@click.argument("payload", type=click.Path(exists=True, dir_okay=False))
@click.option("--rules", "rules_path", help="rules file or folder (default $BRIDGE_RULES)")
@click.option("--source", type=click.Choice(sorted(SOURCES)),
              help="payload source (default: told from its fields)")
@click.option("--at", "at", metavar="'YYYY-MM-DD HH:MM'",
              help="decide as at this time in BRIDGE_TZ (default now): mutes, who is on call")
def render(payload: str, rules_path: str | None, source: str | None, at: str | None) -> None:
    """Print every SMS a webhook body would cause now (or --at), without sending or storing
    anything; for an alert that pages nobody, what each route made of it; a resolved alert
    goes to those paged for its episode in $BRIDGE_STORE, as the service would send it."""
    from bridge.decide.preview import preview, render_lines

    settings = _settings()
    rules = _rules_or_exit(rules_path or settings.rules_path, settings.tz)
    store, why = _store_to_read(settings.store)
    try:
        p = preview(Path(payload).read_bytes(), source, rules, _at_or_exit(at, settings),
                    store, why)
    except PayloadError as exc:
        raise click.ClickException(f"{payload}: {exc}") from None
    finally:
        if store is not None:
            store.close()
    for line in render_lines(p, rules, payload, encode_tpl_value):
        click.echo(line)


def _store_to_read(url: str) -> tuple[Any, str]:
    """The store ``bridge render`` reads stored episodes from (``BRIDGE_STORE``), or ``None``
    and why not: a SQLite file that does not exist is not created."""
    from bridge.store import open_store

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return None, f" ({url[len('sqlite:///'):]} does not exist)"
    try:
        return open_store(url), ""
    except (ValueError, StoreUnavailable) as exc:
        return None, f" ({exc})"


def _shift_line(view: OnCall, shift: Shift) -> str:
    who = ", ".join(f"{p} {view.mobiles.get(p, '')}" for p in shift.people)
    return (f"{shift.start:%Y-%m-%d %H:%M} -> {shift.end:%Y-%m-%d %H:%M}  {who}"
            + ("  (override)" if shift.override else ""))


@main.command()
@click.argument("schedule", required=False)
@click.option("--rules", "rules_path", help="rules file or folder (default $BRIDGE_RULES)")
@click.option("--at", "at", metavar="'YYYY-MM-DD HH:MM'",
              help="who is on call at this time in BRIDGE_TZ (default now)")
@click.option("--next", "next_n", type=click.IntRange(0, 1000), default=3, show_default=True,
              help="how many shifts after the current one to list")
def oncall(schedule: str | None, rules_path: str | None, at: str | None, next_n: int) -> None:
    """Print who is on call (names, mobiles, shift start and end, overrides marked) in every
    schedule or in SCHEDULE, and the next shifts; exit 1 listing every problem when the rules
    are invalid."""
    settings = _settings()
    rules = _rules_or_exit(rules_path or settings.rules_path, settings.tz)
    when = _at_or_exit(at, settings)
    if schedule is not None and schedule not in rules.schedules:
        raise click.ClickException(f"unknown schedule {schedule!r}; the rules have "
                                   f"{', '.join(rules.schedules) or 'none'}")
    if not rules.schedules:
        click.echo("no schedules in the rules")
        return
    for view in oncall_view(rules.schedules, rules.people, when, next_n, schedule):
        s = view.schedule
        click.echo(f"{s.name} ({s.zone.key}; {s.shift_days}d shifts, handover "
                   f"{s.handover:%H:%M}, from {s.start}):")
        click.echo(f"  now   {_shift_line(view, view.now)}")
        for shift in view.next:
            click.echo(f"  next  {_shift_line(view, shift)}")


@main.command(name="send-test")
@click.argument("mobile")
@click.option("--template", "template", required=True, help="template name in the rules")
@click.option("--var", "variables", multiple=True, help="k=v, repeatable; others get 'test'")
@click.option("--rules", "rules_path", help="rules file or folder (default $BRIDGE_RULES)")
def send_test(mobile: str, template: str, variables: tuple[str, ...],
              rules_path: str | None) -> None:
    """Send one real SMS through the configured JUHE_KEY (dry-run without it)."""
    from bridge.rules.model import valid_mobile

    settings = _settings()
    setup_logging(settings.log_format, settings.secrets, settings.log_level.upper())
    rules = _rules_or_exit(rules_path or settings.rules_path, settings.tz)
    if not valid_mobile(mobile):
        raise click.ClickException(f"not an 11-digit mainland China mobile: {mask_mobile(mobile)}")
    if template not in rules.templates:
        raise click.ClickException(f"unknown template {template!r}; the rules have "
                                   f"{', '.join(rules.templates) or 'none'}")
    tpl = rules.templates[template]
    values = dict.fromkeys(tpl.vars, "test")
    for kv in variables:
        k, sep, v = kv.partition("=")
        if not sep or k not in tpl.vars:
            raise click.ClickException(f"--var {k!r}: expected k=v with k one of "
                                       f"{', '.join(tpl.vars)}")
        values[k] = v
    if tpl.voice is not None:
        _test_call(settings, tpl.voice, mobile, values)
        return
    assert tpl.tpl_id is not None
    click.echo(f"tpl_id {tpl.tpl_id} to {mask_mobile(mobile)}: tpl_value "
               f"{encode_tpl_value(values)}")
    with JuheClient(settings.juhe_key, settings.juhe_url, settings.juhe_timeout) as client:
        if client.dry_run:
            click.echo("DRY-RUN: JUHE_KEY is not set, nothing sent")
            return
        try:
            result = client.send(mobile, tpl.tpl_id, values)
        except JuheError as exc:
            raise click.ClickException(f"Juhe refused ({type(exc).__name__} {exc.code}): "
                                       f"{exc.reason}") from None
    click.echo(f"sent: sid {result.sid}, fee {result.fee}")


def _test_call(settings: Settings, voice: Voice, mobile: str, values: dict[str, str]) -> None:
    """``send-test`` of a voice template: one real call through its provider (dry-run: logged,
    not made)."""
    from bridge.providers.dispatch import Providers

    click.echo(f"call {mask_mobile(mobile)} through {voice.provider}: vars "
               f"{json.dumps(values, ensure_ascii=False)}")
    providers = Providers.from_settings(settings)
    try:
        result = providers.call(voice, mobile, values)
    except JuheError as exc:
        raise click.ClickException(f"{exc.provider} refused ({type(exc).__name__} {exc.code}):"
                                   f" {exc.reason}") from None
    finally:
        providers.close()
    if result.outcome == "dry_run":
        click.echo("DRY-RUN: JUHE_KEY is not set, no call made")
        return
    click.echo(f"called: call id {result.sid}")


__all__ = ["main", "StoreUnavailable"]
