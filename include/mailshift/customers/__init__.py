"""Customers: the pre-migration audit and the notices affected customers must get before the swap.

- `addresses`, `pop3logs`, `mail_rules`: the pure checks (addresses the new provider refuses;
  POP3 usage from legacy logs: APOP, LAST, leave-on-server; forwarding, auto-reply and program
  rules). No database.
- `audit`: the audit runs, from those checks to stored findings (`mailshift.store.audit`).
- `notices`: the notice campaigns (email rounds, letter and call lists, recorded outcomes) and
  the cutover gate's notice condition, `notice_gate_check`.
- `reports`: finding and notice counts per building or wave, for the operators.
"""
