"""The compiled data path (Cython): see core.pyx and docs/architecture.md."""
