"""The `tornstore` command line: thin click commands over the library (parse, call, format)."""
