"""python -m lab up | down | status"""
import argparse
import sys

from . import lab


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab", description="mailshift local lab")
    ap.add_argument("command", choices=["up", "down", "status"])
    a = ap.parse_args(argv)
    return {"up": lab.up, "down": lab.down, "status": lab.status}[a.command]()


if __name__ == "__main__":
    sys.exit(main())
