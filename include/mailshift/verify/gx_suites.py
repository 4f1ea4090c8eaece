"""Great Expectations (GX Core 1.x) suite over a verify run's mailbox-level reconciliation rows.

Ephemeral context, PostgreSQL data source, one query asset per run, GX called directly.
Analytics are switched off before GX is imported (GX_ANALYTICS_ENABLED=False) and nothing
leaves the machine. The validation result (JSON) is stored in `gx_validation`.

Expectations (one row per mailbox in scope; waived findings are excluded from the *_open and
*_net columns, and every waiver is listed in the report):
- row count = number of mailboxes of the building in the inventory
- mailbox_id unique
- src_count_net = dest_count_net (destination count minus source-expunged messages kept there)
- src_bytes_net = dest_bytes_net (destination bytes minus the declared X-UIDL lines and the
  byte difference of altered messages the building spec accepts, `accepted_altered_bytes`)
- missing_open = duplicated_open = altered_open = unexpected_open = 0
- flags_open = dates_open = folders_open = uidl_open = 0, blocking_open = 0
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass

from mailshift.store import verification as vstore

SUITE_NAME = "mailshift_zero_loss"
ZERO_COLUMNS = ("missing_open", "duplicated_open", "altered_open", "unexpected_open", "flags_open",
                "dates_open", "folders_open", "uidl_open", "blocking_open")
_lock = threading.Lock()


@dataclass
class GxOutcome:
    success: bool
    evaluated: int
    failed: int
    result: dict            # ExpectationSuiteValidationResult.to_json_dict()


def _sqlalchemy_url(conn, dsn: str | None) -> str:
    """A SQLAlchemy URL for the database `conn` is connected to (psycopg2 driver)."""
    from sqlalchemy.engine import URL

    if dsn:
        from sqlalchemy.engine import make_url

        url = make_url(dsn)
        return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    p = conn.get_dsn_parameters()
    return URL.create("postgresql+psycopg2", username=p.get("user"), password=conn.info.password or None,
                      host=p.get("host"), port=int(p["port"]) if p.get("port") else None,
                      database=p.get("dbname")).render_as_string(hide_password=False)


def build_suite(gx, expected_rows: int):
    gxe = gx.expectations
    suite = gx.ExpectationSuite(name=SUITE_NAME, meta={"mailshift": "zero-loss proof, one row per mailbox"})
    suite.add_expectation(gxe.ExpectTableRowCountToEqual(
        value=expected_rows, meta={"why": "every mailbox in scope was verified"}))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="mailbox_id"))
    suite.add_expectation(gxe.ExpectColumnPairValuesToBeEqual(
        column_A="src_count_net", column_B="dest_count_net",
        meta={"why": "source count = destination count (kept source-expunged and waived excluded)"}))
    suite.add_expectation(gxe.ExpectColumnPairValuesToBeEqual(
        column_A="src_bytes_net", column_B="dest_bytes_net",
        meta={"why": "source bytes = destination bytes minus declared X-UIDL lines (and minus the byte "
                     "difference of altered messages the building spec accepts)"}))
    for col in ZERO_COLUMNS:
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(
            column=col, min_value=0, max_value=0, meta={"why": f"{col.removesuffix('_open')} = 0 (unwaived)"}))
    return suite


def run_building_suite(conn, run_id: int, expected_rows: int, dsn: str | None = None) -> GxOutcome:
    """Validate the run's mailbox rows; returns the outcome (does not raise on failed expectations)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"   # GX's own switch, read by GX at import
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    url = _sqlalchemy_url(conn, dsn)
    with _lock:   # the ephemeral context is cheap but GX's global state is not thread-safe
        context = gx.get_context(mode="ephemeral")
        try:
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context.variables.progress_bars = ProgressBarsConfig(globally=False)
        except Exception:  # progress bars are cosmetic
            pass
        ds = context.data_sources.add_postgres(f"mailshift_run_{run_id}", connection_string=url)
        asset = ds.add_query_asset(f"reconciliation_run_{run_id}", query=vstore.gx_query(run_id, ZERO_COLUMNS))
        batch = asset.add_batch_definition_whole_table("mailboxes")
        suite = context.suites.add(build_suite(gx, expected_rows))
        vd = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"verify_run_{run_id}", data=batch, suite=suite))
        result = vd.run(result_format={"result_format": "COMPLETE",
                                       "unexpected_index_column_names": ["address"]})
    d = json.loads(json.dumps(result.to_json_dict(), default=str))
    stats = d.get("statistics", {})
    return GxOutcome(bool(result.success), int(stats.get("evaluated_expectations", 0)),
                     int(stats.get("unsuccessful_expectations", 0)), d)


def store_result(conn, run_id: int, outcome: GxOutcome, report_path: str | None) -> int:
    return vstore.store_gx_validation(conn, run_id, SUITE_NAME, outcome.success, outcome.evaluated,
                                      outcome.failed, outcome.result, report_path)
