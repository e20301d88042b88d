"""Qt views on the core: they show EpochReports and never compute science themselves."""
