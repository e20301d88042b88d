"""The science of olsdesk: losses, models, data, metrics and training. Never imports Qt."""
