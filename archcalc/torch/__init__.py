"""Everything that imports torch lives here: custom modules, the builder,
check, bench and train. Nothing in the analysis path imports this package."""
