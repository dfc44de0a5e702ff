"""The library's ``omg`` subcommands, one module each: ``register(subparsers)`` adds the subcommand with its flags,
next to the code that reads them. They need only the core install; :mod:`omg_platform.cli` is the command that
lists them with the platform's."""
