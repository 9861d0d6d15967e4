"""The default job: a supervised recipe built from the config's model, data and optim."""
