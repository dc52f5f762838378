"""Allow ``python -m sidecar_plugin``: the same entry point as the console script."""

from sidecar_plugin.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
