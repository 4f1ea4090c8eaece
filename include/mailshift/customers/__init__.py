"""Customers: the pre-migration audit (addresses the new provider refuses, POP3 usage from legacy
logs: APOP, LAST, leave-on-server; forwarding and auto-reply rules) and the notices affected
customers must get before the swap."""
