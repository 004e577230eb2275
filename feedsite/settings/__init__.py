"""Settings: ``base`` for every deployment (configured by environment), ``test`` for the suite."""
