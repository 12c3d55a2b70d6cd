"""Bird's-eye views, frame composition and plots for videos, the viewer and reports."""
