"""Inventory: legacy exports -> validated buildings, households, mailboxes (see load.py)."""
from mailshift.inventory.exports import ExportRow, Issue
from mailshift.inventory.load import (
           InventoryError,
           LoadReport,
           ParsedInventory,
           load_inventory,
           parse_exports,
)
from mailshift.inventory.spec import DEFAULT_SPEC, SPEC_SCHEMA, resolve

__all__ = ["ExportRow", "Issue", "InventoryError", "LoadReport", "ParsedInventory",
           "load_inventory", "parse_exports", "DEFAULT_SPEC", "SPEC_SCHEMA", "resolve"]
