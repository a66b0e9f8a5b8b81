"""One module per `openmoshi` subcommand: `add_arguments(parser)` and `main(args)`."""
