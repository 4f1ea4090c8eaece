"""Cutover of a domain: TTL check, zero-loss gate, final pass, MX swap (RFC 2136), drain, final proof.

Plain Python (no Airflow imports); `mailshift.cutover.steps` has one function per DAG step.
"""
