"""`python -m amoseg` runs the CLI (torchrun needs the module form)."""

from amoseg.cli.main import main

if __name__ == "__main__":
    main()
