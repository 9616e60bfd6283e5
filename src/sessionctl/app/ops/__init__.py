"""Operations: each takes a StoreContext and options and returns a result the CLI renders."""
