"""The developer CLI (``fnbus login``, ``init``, ``push``, ``deploy``, ``invoke`` …)."""
