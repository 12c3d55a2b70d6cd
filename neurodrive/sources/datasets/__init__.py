"""Importers of public driving datasets, one module each (see docs/datasets.md); each is a
``LogSource`` registered in ``neurodrive.sources`` under the dataset's name."""
