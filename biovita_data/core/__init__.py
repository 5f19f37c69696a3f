"""The layer every other one stands on: paths, schemas, atomic tables, vocabularies, names."""
