"""A run's state: its settings (config, presets, settings files), its record and its lock."""
