"""`python -m harness.sweep SPEC.yaml`: see harness/sweep/cli.py."""

from harness.sweep.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
