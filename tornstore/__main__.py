"""`python -m tornstore`: the same command line as the `tornstore` script."""
from tornstore.cli.main import main

if __name__ == "__main__":
    main()
