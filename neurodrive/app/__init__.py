"""Front ends: the command line, the replay / eval runners, the pygame viewer and the demo."""
