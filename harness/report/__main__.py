"""`python -m harness.report`: see harness.report.cli."""

from harness.report.cli import main

main()
