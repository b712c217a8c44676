"""deploy/grafana/spcs.json charts what the services export: every panel queries something, its
expressions name only samples that `spcs.common.metrics` puts in prometheus_client's registry,
every spcs metric is charted by some panel, the labels the expressions group and filter by are
the metric's own, every panel and query reads the `${datasource}` variable and filters by
`$job`, and the panels have unique ids and do not overlap."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Info
from prometheus_client.metrics import MetricWrapperBase

from spcs.common import metrics

pytestmark = pytest.mark.fast

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "spcs.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
JOB_FILTER = 'job=~"$job"'

METRIC = re.compile(r"\bspcs_[a-z0-9_]+")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SELECTOR = re.compile(r"\b(spcs_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
# labels Prometheus adds when it scrapes, and the histogram's bucket bound
UNCHECKED_LABELS = frozenset({"le", "job", "instance"})
# the sample names prometheus_client exposes for a family of each type
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "info": ("_info",),
}


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in (collapsed) rows included."""
    for panel in panels:
        yield panel
        yield from walk(panel.get("panels", []))


def all_panels() -> list[dict[str, Any]]:
    return list(walk(load_dashboard()["panels"]))


def queried_panels() -> list[dict[str, Any]]:
    return [panel for panel in all_panels() if panel.get("targets")]


def expressions(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel["targets"] if target.get("expr", "").strip()]


def unquoted(expr: str) -> str:
    """The expression with its string literals emptied (a regex in a matcher may hold parens)."""
    return STRING.sub('""', expr)


def exported() -> dict[str, str]:
    """Sample name -> family name, for every spcs family in the services' registry."""
    samples: dict[str, str] = {}
    for family in REGISTRY.collect():
        if family.name.startswith("spcs_"):
            assert family.type in SUFFIXES, f"{family.name}: unexpected type {family.type}"
            for suffix in SUFFIXES[family.type]:
                samples[family.name + suffix] = family.name
    return samples


@pytest.fixture
def label_names(monkeypatch: pytest.MonkeyPatch) -> dict[str, frozenset[str]]:
    """Family name -> its label names, from the metric objects of `spcs.common.metrics`; an
    Info's labels are the keys of the value `describe_build` gives it, read here from a copy in
    a registry of its own so the services' registry is left as it is."""
    found = {
        obj._name: frozenset(obj._labelnames)
        for obj in vars(metrics).values()
        if isinstance(obj, MetricWrapperBase)
    }
    registry = CollectorRegistry()
    copy = Info(metrics.BUILD._name, "a copy of spcs_build", registry=registry)
    monkeypatch.setattr(metrics, "BUILD", copy)
    metrics.describe_build("dashboard-test")
    for family in registry.collect():
        for sample in family.samples:
            found[family.name] |= frozenset(sample.labels)
    return found


def parenthesised(text: str, *, backwards: bool = False) -> str:
    """The balanced group that `text` starts with (or, backwards, ends with)."""
    opening, closing = (")", "(") if backwards else ("(", ")")
    chars = reversed(text) if backwards else iter(text)
    depth = 0
    for length, char in enumerate(chars, start=1):
        depth += {opening: 1, closing: -1}.get(char, 0)
        if depth == 0:
            return text[-length:] if backwards else text[:length]
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def groupings(expr: str) -> Iterator[tuple[frozenset[str], str]]:
    """Each `by (labels)` with the expression it aggregates: the group right after it
    (`sum by (a) (x)`), or the one before it (`sum (x) by (a)`)."""
    for match in GROUPING.finditer(expr):
        labels = frozenset(name.strip() for name in match.group(1).split(",") if name.strip())
        after, before = expr[match.end() :].lstrip(), expr[: match.start()].rstrip()
        if after.startswith("("):
            yield labels, parenthesised(after)
        else:
            assert before.endswith(")"), f"`by` aggregates nothing in {expr!r}"
            yield labels, parenthesised(before, backwards=True)


def test_every_panel_queries_something() -> None:
    panels = all_panels()
    assert queried_panels(), f"{DASHBOARD}: no panel has a query"
    for panel in panels:
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel.get('title')!r} has no targets"
    for panel in queried_panels():
        assert expressions(panel), f"panel {panel['title']!r}: no target has an expr"


def test_expressions_name_exported_metrics() -> None:
    samples = exported()
    assert samples, "spcs.common.metrics registered no spcs_ metric"
    for panel in queried_panels():
        for expr in expressions(panel):
            for name in METRIC.findall(unquoted(expr)):
                assert name in samples, (
                    f"panel {panel['title']!r} uses {name}, which the services do not export "
                    f"(exported: {', '.join(sorted(samples))})"
                )


def test_every_metric_is_charted() -> None:
    used = {
        name
        for panel in queried_panels()
        for expr in expressions(panel)
        for name in METRIC.findall(unquoted(expr))
    }
    families: dict[str, set[str]] = {}
    for sample, family in exported().items():
        families.setdefault(family, set()).add(sample)
    uncharted = sorted(family for family, names in families.items() if not names & used)
    assert not uncharted, f"no panel charts {', '.join(uncharted)}"


def test_labels_are_the_metrics_own(label_names: dict[str, frozenset[str]]) -> None:
    samples = exported()
    for panel in queried_panels():
        for expr in map(unquoted, expressions(panel)):
            for metric, matchers in SELECTOR.findall(expr):
                family = samples.get(metric)
                if family is None:
                    continue  # test_expressions_name_exported_metrics names it
                unknown = set(MATCHER.findall(matchers)) - UNCHECKED_LABELS - label_names[family]
                assert not unknown, (
                    f"panel {panel['title']!r} filters {metric} by {sorted(unknown)}, not its "
                    f"labels ({sorted(label_names[family])})"
                )
            for labels, aggregated in groupings(expr):
                for metric in METRIC.findall(aggregated):
                    family = samples.get(metric)
                    if family is None:
                        continue
                    unknown = labels - UNCHECKED_LABELS - label_names[family]
                    assert not unknown, (
                        f"panel {panel['title']!r} groups {metric} by {sorted(unknown)}, not "
                        f"its labels ({sorted(label_names[family])})"
                    )


def test_datasource_is_the_variable() -> None:
    variables = {var["name"]: var for var in load_dashboard()["templating"]["list"]}
    source = variables.get("datasource")
    assert source is not None, "no `datasource` template variable"
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for panel in all_panels():
        if panel["type"] == "row" and "datasource" not in panel:
            continue
        assert panel.get("datasource") == DATASOURCE, (
            f"panel {panel.get('title')!r} reads {panel.get('datasource')}, not {DATASOURCE}"
        )
        for target in panel.get("targets", []):
            assert target.get("datasource") == DATASOURCE, (
                f"panel {panel['title']!r} target {target.get('refId')} reads "
                f"{target.get('datasource')}, not {DATASOURCE}"
            )


def test_expressions_filter_by_job() -> None:
    variables = {var["name"]: var for var in load_dashboard()["templating"]["list"]}
    job = variables.get("job")
    assert job is not None, "no `job` template variable"
    assert job["datasource"] == DATASOURCE
    assert "label_values(spcs_build_info, job)" in job["definition"]
    assert job["multi"] and job["includeAll"]
    for panel in queried_panels():
        for expr in expressions(panel):
            selected = {metric for metric, body in SELECTOR.findall(expr) if JOB_FILTER in body}
            for metric in METRIC.findall(unquoted(expr)):
                assert metric in selected, (
                    f"panel {panel['title']!r}: {metric} is not filtered by {JOB_FILTER}"
                )


def assert_no_overlap(panels: list[dict[str, Any]]) -> None:
    """The panels of one level (the dashboard's, or a collapsed row's) share no grid cell."""
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel)
                assert other is panel, (
                    f"panels {other['title']!r} and {panel['title']!r} overlap at {(x, y)}"
                )


def test_panels_have_ids_titles_and_room_of_their_own() -> None:
    panels = all_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    for panel in panels:
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] != "row":
            assert panel.get("description"), f"panel {panel['title']!r} has no description"
    top = load_dashboard()["panels"]
    assert_no_overlap(top)
    for row in top:
        assert_no_overlap(row.get("panels", []))
