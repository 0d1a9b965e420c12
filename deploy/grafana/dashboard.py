"""The kvstore Grafana dashboard, built with grafana-foundation-sdk (whose
builders and types are generated from Grafana's own schemas, so what this
writes is a dashboard as Grafana defines one).

    .venv/bin/python deploy/grafana/dashboard.py > deploy/grafana/kvstore.json

`tests/test_observability.py` checks that kvstore.json is what this writes,
that Grafana's dashboard model reads it back whole, and that every query
is PromQL that Prometheus accepts and names only metrics kvstore exports.
"""

import json
import sys
from typing import Any

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (BigValueColorMode, BigValueGraphMode,
                                                  GraphDrawStyle, LegendDisplayMode,
                                                  LegendPlacement, SortOrder,
                                                  TooltipDisplayMode)
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


_panel_ids = iter(range(1, 1000))


def query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def graph(title: str, unit: str, *queries: prometheus.Dataquery,
          description: str = "") -> timeseries.Panel:
    panel = (timeseries.Panel().id(next(_panel_ids)).title(title).unit(unit)
             .datasource(DATASOURCE).draw_style(GraphDrawStyle.LINE).line_width(1)
             .fill_opacity(10).height(8).span(12)
             .legend(common.VizLegendOptions().show_legend(True).display_mode(
                 LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM).calcs([]))
             .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI)
                      .sort(SortOrder.DESCENDING)))
    if description:
        panel = panel.description(description)
    for ref, q in zip("ABCDEFGH", queries):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def figure(title: str, unit: str, expr: str, description: str) -> stat.Panel:
    return (stat.Panel().id(next(_panel_ids)).title(title).unit(unit).datasource(DATASOURCE)
            .description(description).with_target(query(expr, title).ref_id("A"))
            .color_mode(BigValueColorMode.VALUE).graph_mode(BigValueGraphMode.AREA)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
            .height(4).span(6))


def build() -> dashboard.Dashboard:
    return (
        dashboard.Dashboard("kvstore")
        .uid("kvstore-overview")
        .tags(["kvstore"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus")
                       .type("prometheus"))
        .with_row(dashboard.Row("Cluster").id(next(_panel_ids)))
        .with_panel(figure(
            "Processes up", "none", 'sum(up{job="kvstore"})',
            "Processes Prometheus scrapes (nodes and coordinators)."))
        .with_panel(figure(
            "Peers convicted", "none", "count(min by (node) (kvstore_peer_up) == 0) or vector(0)",
            "Nodes some failure detector holds down."))
        .with_panel(figure(
            "Hints pending", "none", "sum(kvstore_hints_pending) or vector(0)",
            "Writes held by stand-ins for nodes that were down."))
        .with_panel(figure(
            "Fullest store", "percentunit", "max(kvstore_db_map_used_ratio)",
            "The LMDB map use of the fullest node: writes fail at 100%."))
        .with_row(dashboard.Row("Requests").id(next(_panel_ids)))
        .with_panel(graph(
            "Requests by method and code", "reqps",
            query("sum by (method, code) (rate(kvstore_requests_total[1m]))",
                  "{{method}} {{code}}"),
            description="RPCs handled per second, nodes and coordinators together."))
        .with_panel(graph(
            "Latency p99 by method", "s",
            query("histogram_quantile(0.99, sum by (le, method) "
                  "(rate(kvstore_request_duration_seconds_bucket[5m])))", "{{method}} p99"),
            query("histogram_quantile(0.5, sum by (le, method) "
                  "(rate(kvstore_request_duration_seconds_bucket[5m])))", "{{method}} p50")))
        .with_panel(graph(
            "Coordinator cache hit ratio", "percentunit",
            query("sum by (member) (rate(kvstore_cache_hits_total[5m])) / (sum by (member) "
                  "(rate(kvstore_cache_hits_total[5m])) + sum by (member) "
                  "(rate(kvstore_cache_misses_total[5m])))", "{{member}}")))
        .with_panel(graph(
            "Read repairs", "ops",
            query("sum by (member) (rate(kvstore_read_repairs_total[5m]))", "{{member}}")))
        .with_row(dashboard.Row("Replication").id(next(_panel_ids)))
        .with_panel(graph(
            "Peers up, as each process sees them", "none",
            query("kvstore_peer_up", "{{member}} sees {{node}}"),
            description="1 while the failure detector holds the peer up."))
        .with_panel(graph(
            "Hints pending per target", "none",
            query("sum by (member, node) (kvstore_hints_pending)", "{{member}} for {{node}}")))
        .with_panel(graph(
            "Anti-entropy", "ops",
            query("sum by (member) (rate(kvstore_anti_entropy_keys_repaired_total[5m]))",
                  "{{member}} keys repaired"),
            query("sum by (member) (rate(kvstore_anti_entropy_exchanges_total[5m]))",
                  "{{member}} exchanges")))
        .with_panel(graph(
            "Tombstones purged", "ops",
            query("sum by (member) (rate(kvstore_tombstones_purged_total[5m]))", "{{member}}")))
        .with_row(dashboard.Row("Storage and processes").id(next(_panel_ids)))
        .with_panel(graph(
            "Store use", "percentunit", query("kvstore_db_map_used_ratio", "{{member}}")))
        .with_panel(graph(
            "Commit latency p99 and writes per commit", "s",
            query("histogram_quantile(0.99, sum by (le, member) "
                  "(rate(kvstore_commit_duration_seconds_bucket[5m])))", "{{member}} p99"),
            description="Each commit is one LMDB transaction and fsync, shared by the writes "
                        "queued while the previous one ran."))
        .with_panel(graph(
            "Resident memory", "bytes",
            query('process_resident_memory_bytes{job="kvstore"}', "{{member}}")))
        .with_panel(graph(
            "CPU", "percentunit",
            query('rate(process_cpu_seconds_total{job="kvstore"}[1m])', "{{member}}")))
    )


def dashboard_json() -> dict[str, Any]:
    encoded: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(build().build()))
    return encoded


if __name__ == "__main__":
    json.dump(dashboard_json(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
